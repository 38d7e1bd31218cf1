import ControlProtocol
import FakeVM
import Foundation
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A real `tapswitchd` (the DataPlane backend: persistent TAPs, AF_PACKET) for one test: temp socket
/// and state dir, the repository's default config, log in a file. Driven only through `tapswitchctl`.
///
/// It can be SIGKILLed and started again on the same socket and state dir (a crash and restart).
/// Registering with a ``Cleanup`` makes a failing test still kill the daemon and remove the temp dir.
final class RealDaemon: Sendable {
    let directory: String
    let socket: String
    let stateDir: String
    let configPath: String
    let logPath: String
    private let process = Mutex<Process?>(nil)

    init(cleanup: Cleanup) throws {
        let dir = try TempDir("tswreal")
        directory = dir.path
        socket = dir.file("run/control.sock")
        stateDir = dir.file("state")
        // The shipped default config: it enables duplicate-mac-guard and touches no existing device.
        configPath = EndToEndTests.repo + "/config/tapswitchd.toml"
        logPath = dir.file("tapswitchd.log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        cleanup.add("remove \(dir.path)") { dir.remove() }
        cleanup.add("kill tapswitchd") { [self] in killNow() }
    }

    /// The daemon's log so far (all runs), framed for failure messages.
    var log: String {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return "----- tapswitchd log -----\n\(text)----- end -----"
    }

    var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    /// Starts tapswitchd (without TAPSWITCH_BACKEND: the real data plane) and waits until
    /// `tapswitchctl version` answers.
    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Products.path("tapswitchd"))
        p.arguments = ["--config", configPath, "--socket", socket, "--state-dir", stateDir, "--log-level", "debug"]
        var env = ProcessInfo.processInfo.environment
        for key in ["TAPSWITCH_BACKEND", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { env.removeValue(forKey: key) }
        p.environment = env
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        logHandle.seekToEndOfFile()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = logHandle
        p.standardError = logHandle
        try p.run()
        try? logHandle.close()
        process.withLock { $0 = p }
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            guard p.isRunning else { break }
            if try await ctl("version").status == 0 { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RealTestError("tapswitchd did not become ready (running: \(p.isRunning))\n\(log)")
    }

    /// Runs `tapswitchctl --socket SOCKET ARGS`.
    func ctl(_ args: String...) async throws -> RunResult { try await ctl(args) }

    func ctl(_ args: [String]) async throws -> RunResult {
        try await run(try Products.path("tapswitchctl"), ["--socket", socket] + args, timeout: 20)
    }

    /// Runs `tapswitchctl ARGS --json`, requires exit 0 and decodes stdout.
    func json<T: Decodable>(_ type: T.Type, _ args: String...) async throws -> T {
        let r = try await ctl(args + ["--json"])
        guard r.status == 0 else {
            throw RealTestError("tapswitchctl \(args.joined(separator: " ")) --json exited \(r.status): \(r.stderr)\n\(log)")
        }
        return try Wire.makeDecoder().decode(T.self, from: Data(r.stdout.utf8))
    }

    func events() async throws -> [SwitchEvent] { try await json([SwitchEvent].self, "events") }
    func show() async throws -> SwitchSnapshot { try await json(SwitchSnapshot.self, "show") }

    /// Polls `events --json` until `done` holds; throws with the events and the log on timeout.
    @discardableResult
    func waitForEvents(_ what: String, timeout: Duration = .seconds(15), _ done: ([SwitchEvent]) -> Bool) async throws -> [SwitchEvent] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let all = try await events()
            if done(all) { return all }
            if ContinuousClock.now >= deadline {
                throw RealTestError("\(what): not seen within \(timeout); events:\n\(all.map(\.summary).joined(separator: "\n"))\n\(log)")
            }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    /// SIGKILL (a crash: no cleanup by the daemon at all); returns once the process is gone.
    func sigkill() async throws {
        guard let p = process.withLock({ $0 }) else { return }
        kill(p.processIdentifier, SIGKILL)
        let gone = try await waitUntil(10) { !p.isRunning }
        try #require(gone, "tapswitchd survived SIGKILL")
        p.waitUntilExit()
    }

    /// SIGTERM, then waits for the exit status (SIGKILL and a recorded issue after 15 s).
    func stop() async throws -> Int32 {
        guard let p = process.withLock({ $0 }) else { return -1 }
        if p.isRunning { kill(p.processIdentifier, SIGTERM) }
        if try await !waitUntil(15, { !p.isRunning }) {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("tapswitchd ignored SIGTERM\n\(log)")
        }
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// Cleanup path: SIGKILL if still running.
    private func killNow() {
        guard let p = process.withLock({ $0 }), p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }
}

extension SwitchEvent {
    var summary: String {
        "\(seq) \(kind.rawValue) \(portName)\(vmName.map { " vm=\($0)" } ?? "")\(restore ? " restore" : "")\(detail.map { " (\($0))" } ?? "")"
    }
}

/// A test failure with its context (events, daemon log) in the message.
struct RealTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A ``FakeVM`` attached to a VM's TAP, shareable between threads: the lock lets one thread at a time
/// use the (non-Sendable) FakeVM. Blocking: call it from a thread of its own (``offPool(_:)``), never
/// for long on the cooperative pool.
final class GuestNIC: Sendable {
    let tap: String
    let mac: [UInt8]
    private let vm: Mutex<FakeVM?>

    /// Attaches to `tap` as QEMU does (carrier goes up).
    init(tap: String, mac: String) throws {
        self.tap = tap
        guard let bytes = TestFrames.parseMAC(mac) else { throw RealTestError("'\(mac)' is not a MAC address") }
        self.mac = bytes
        vm = Mutex(try FakeVM(tap: tap))
    }

    func send(_ frame: [UInt8]) throws {
        try vm.withLock { vm in
            guard let vm else { throw RealTestError("FakeVM on \(tap) is closed") }
            try vm.send(frame)
        }
    }

    /// The first frame within `timeout` for which `match` holds (others are discarded); nil on timeout.
    func receive(timeout: Duration, where match: ([UInt8]) -> Bool) throws -> [UInt8]? {
        let deadline = ContinuousClock.now + timeout
        return try vm.withLock { vm in
            guard let vm else { throw RealTestError("FakeVM on \(tap) is closed") }
            while true {
                let remaining = ContinuousClock.now.duration(to: deadline)
                guard let frame = try vm.receive(timeout: max(remaining, .zero)) else { return nil }
                if match(frame) { return frame }
                if remaining <= .zero { return nil }
            }
        }
    }

    /// Detaches (carrier goes down). Idempotent.
    func close() {
        vm.withLock { vm in
            vm?.close()
            vm = nil
        }
    }
}

/// Test frames: EtherType 0x88b5, payload `tswdreal` + a 32-bit token (one per exchange or flow) + a
/// 32-bit sequence number. Anything else on a TAP (there should be nothing) is ignored by the tests.
enum Probe {
    static let magic = Array("tswdreal".utf8)

    static func frame(dst: [UInt8], src: [UInt8], token: UInt32, seq: UInt32) -> [UInt8] {
        TestFrames.ethernet(dst: dst, src: src, etherType: 0x88b5, payload: magic + bytes(token) + bytes(seq))
    }

    /// (token, seq) of a probe frame, nil for anything else.
    static func parse(_ frame: [UInt8]) -> (token: UInt32, seq: UInt32)? {
        guard frame.count >= 14 + 16, frame[12] == 0x88, frame[13] == 0xb5, Array(frame[14..<22]) == magic else { return nil }
        return (word(frame, 22), word(frame, 26))
    }

    private static func bytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    private static func word(_ f: [UInt8], _ i: Int) -> UInt32 {
        UInt32(f[i]) << 24 | UInt32(f[i + 1]) << 16 | UInt32(f[i + 2]) << 8 | UInt32(f[i + 3])
    }
}

/// A deliberately dumb control-socket client: raw bytes in, raw reply lines out. Blocking; run it on a
/// thread of its own (``offPool(_:)``).
enum RawControlClient {
    /// Connects, sends `bytes` (stopping quietly at the first send error: the server may close early on an
    /// oversized request), optionally half-closes, then reads reply lines until EOF (10 s timeout).
    /// With `abandon` it closes right after sending, without reading (a client that vanishes).
    static func exchange(path: String, _ bytes: [UInt8], halfClose: Bool = false, abandon: Bool = false) throws -> [String] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RealTestError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw RealTestError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path.utf8) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw RealTestError("connect \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += n
        }
        if abandon { return [] }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            reply += chunk[0..<n]
        }
        return String(decoding: reply, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

/// `ip link show NAME` exits 0: the device exists (in this namespace).
func linkExists(_ name: String) async throws -> Bool {
    try await offPool { try Shell.run(["ip", "link", "show", "dev", name]).status == 0 }
}
