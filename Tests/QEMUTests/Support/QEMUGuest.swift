import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A tiny Linux guest under QEMU, attached to one host TAP through virtio-net, running one role of
/// `scripts/guest/init` and reporting on its serial console (`TSW-READY`, `TSW-RESULT ...`).
///
/// Starting it launches QEMU at once; the guest kernel reaches `TSW-READY` about 3 s later under TCG.
/// Roles other than `idle` power the guest off when done, so QEMU exits by itself. `deinit` kills
/// QEMU if it is still running and removes the log directory (set `TAPSWITCH_KEEP_GUEST_LOGS=1`
/// to keep it).
///
/// ## Concurrency model
/// All stored properties are immutable; the QEMU `Process` is only signalled and polled, and the
/// serial log is read from its file, so any thread may call any method.
final class QEMUGuest: Sendable {
    let spec: GuestSpec
    /// Directory holding `serial.log` and `qemu.log` (QEMU's own stdout/stderr).
    let directory: URL
    let serialLogPath: String
    let qemuLogPath: String
    /// The full QEMU argument vector (without the executable), for diagnostics.
    let arguments: [String]
    private let process: ChildProcess

    /// Builds or locates the guest image and boots a guest as `spec` says.
    convenience init(_ spec: GuestSpec) throws {
        try self.init(spec, image: GuestImage.locate())
    }

    /// Boots a guest from `image`. The TAP must exist and must not be held by another process.
    init(_ spec: GuestSpec, image: GuestImage) throws {
        try spec.validate()
        self.spec = spec
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("tsw-guest-\(spec.name)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw QEMUGuestError.launchFailed(guest: spec.name, reason: "cannot create \(dir.path): \(error)")
        }
        directory = dir
        serialLogPath = dir.appendingPathComponent("serial.log").path
        qemuLogPath = dir.appendingPathComponent("qemu.log").path
        arguments = Self.qemuArguments(spec: spec, image: image, serialLog: serialLogPath)

        let qemu = try Self.qemuExecutable(guest: spec.name)
        guard FileManager.default.createFile(atPath: serialLogPath, contents: nil),
              FileManager.default.createFile(atPath: qemuLogPath, contents: nil),
              let output = FileHandle(forWritingAtPath: qemuLogPath) else {
            throw QEMUGuestError.launchFailed(guest: spec.name, reason: "cannot open \(qemuLogPath)")
        }
        process = ChildProcess()
        if let netns = spec.netns {
            // `ip netns exec` execs QEMU itself (same process), so kill() and isRunning reach QEMU.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["ip", "netns", "exec", netns, qemu.path] + arguments
        } else {
            process.executableURL = qemu
            process.arguments = arguments
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw QEMUGuestError.launchFailed(guest: spec.name, reason: "\(qemu.path): \(error)")
        }
        try? output.close()
    }

    deinit {
        if process.isRunning {
            kill()
            _ = try? waitForExit(timeout: .seconds(10))
        }
        if ProcessInfo.processInfo.environment["TAPSWITCH_KEEP_GUEST_LOGS"] == nil {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    // MARK: Serial console

    /// Everything the guest wrote to its serial console so far (carriage returns removed).
    var serialLog: String {
        Self.read(serialLogPath)
    }

    /// QEMU's own stdout and stderr (e.g. "could not configure /dev/net/tun").
    var qemuOutput: String {
        Self.read(qemuLogPath)
    }

    /// Polls the serial log until a line contains `marker`, and returns that line.
    ///
    /// Throws ``QEMUGuestError/exitedEarly`` as soon as QEMU is gone without the marker, and
    /// ``QEMUGuestError/timeout`` at the deadline; both carry the serial log.
    @discardableResult
    func waitFor(marker: String, timeout: Duration) throws -> String {
        try waitFor(marker: marker, count: 1, timeout: timeout)[0]
    }

    /// Polls until `count` lines contain `marker`; returns the first `count` of them in order.
    func waitFor(marker: String, count: Int, timeout: Duration) throws -> [String] {
        let deadline = ContinuousClock.now + timeout
        while true {
            // Sample liveness before reading, so output written just before exit is never missed.
            let running = process.isRunning
            // Only complete lines: the UART writes byte by byte, so the last line may be half written.
            var log = serialLog
            if let lastNewline = log.lastIndex(of: "\n") {
                log = String(log[...lastNewline])
            } else {
                log = ""
            }
            let lines = log.split(separator: "\n").filter { $0.contains(marker) }
            if lines.count >= count {
                return lines.prefix(count).map(String.init)
            }
            if !running {
                throw QEMUGuestError.exitedEarly(
                    guest: spec.name, marker: marker, status: process.terminationStatus,
                    serialLog: serialLog, qemuOutput: qemuOutput)
            }
            if ContinuousClock.now >= deadline {
                throw QEMUGuestError.timeout(
                    guest: spec.name, marker: marker, seconds: timeout.inSeconds,
                    serialLog: serialLog, qemuOutput: qemuOutput)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }

    /// Waits for `TSW-READY` (the guest's interface is up and addressed); returns the line,
    /// e.g. `TSW-READY if=eth0.10 ip=10.99.10.1/24 mac=52:54:00:12:34:56`.
    @discardableResult
    func waitForReady(timeout: Duration = .seconds(60)) throws -> String {
        try waitFor(marker: "TSW-READY", timeout: timeout)
    }

    /// Waits for the first `count` `TSW-RESULT` lines (one per peer for `ping`/`noPing`).
    func waitForResults(count: Int = 1, timeout: Duration = .seconds(90)) throws -> [GuestResult] {
        try waitFor(marker: "TSW-RESULT ", count: count, timeout: timeout).map { line in
            guard let result = GuestResult(line: line) else {
                throw QEMUGuestError.unexpectedResult(guest: spec.name, line: line, serialLog: serialLog)
            }
            return result
        }
    }

    /// Waits for the first `TSW-RESULT` line.
    func waitForResult(timeout: Duration = .seconds(90)) throws -> GuestResult {
        try waitForResults(count: 1, timeout: timeout)[0]
    }

    // MARK: ChildProcess lifecycle

    /// QEMU's process id.
    var pid: Int32 { process.processIdentifier }

    var isRunning: Bool { process.isRunning }

    /// Pulls the plug: SIGKILL to QEMU (the TAP's carrier drops 10-20 ms later).
    func kill() {
        if process.isRunning { signal(process.processIdentifier, SIGKILL) }
    }

    /// SIGTERM: QEMU exits cleanly, closing the TAP.
    func terminate() {
        if process.isRunning { signal(process.processIdentifier, SIGTERM) }
    }

    /// Polls until QEMU has exited; returns its exit status (or the signal number for a signal).
    @discardableResult
    func waitForExit(timeout: Duration) throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                throw QEMUGuestError.exitTimeout(guest: spec.name, seconds: timeout.inSeconds, serialLog: serialLog)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return process.terminationStatus
    }

    // MARK: Command line

    /// Which accelerator to use: KVM only when the CPU advertises VMX/SVM and `/dev/kvm` is usable
    /// (on machines where `/dev/kvm` opens but the CPU lacks VMX, KVM guests die; TCG works).
    /// `TAPSWITCH_QEMU_ACCEL=tcg|kvm` overrides.
    static let useKVM: Bool = {
        switch ProcessInfo.processInfo.environment["TAPSWITCH_QEMU_ACCEL"] {
        case "kvm": return true
        case "tcg": return false
        default: break
        }
        guard access("/dev/kvm", R_OK | W_OK) == 0,
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        else { return false }
        return cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && (line.contains(" vmx") || line.contains(" svm"))
        }
    }()

    static func qemuArguments(spec: GuestSpec, image: GuestImage, serialLog: String) -> [String] {
        var device = "virtio-net-pci,netdev=n0,mac=\(spec.mac),romfile="
        if !spec.offloads {
            device += ",csum=off,guest_csum=off,gso=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off"
                + ",guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off"
        }
        return ["-name", "tsw-\(spec.name)"]
            + (useKVM ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", "tcg", "-cpu", "max"])
            + ["-m", String(spec.memoryMiB), "-smp", "1", "-nodefaults", "-no-user-config",
               "-nographic", "-monitor", "none", "-serial", "file:\(serialLog)", "-no-reboot",
               "-kernel", image.kernel, "-initrd", image.initrd, "-append", spec.kernelCommandLine,
               "-netdev", "tap,id=n0,ifname=\(spec.tap),script=no,downscript=no",
               "-device", device]
    }

    private static func qemuExecutable(guest: String) throws -> URL {
        let env = ProcessInfo.processInfo.environment
        if let explicit = env["TAPSWITCH_QEMU"] { return URL(fileURLWithPath: explicit) }
        for dir in (env["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/qemu-system-x86_64"
            if access(candidate, X_OK) == 0 { return URL(fileURLWithPath: candidate) }
        }
        throw QEMUGuestError.launchFailed(
            guest: guest, reason: "qemu-system-x86_64 not found on PATH (run scripts/install-deps)")
    }

    private static func read(_ path: String) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
    }
}

/// `kill(2)`; a free function because `QEMUGuest.kill()` shadows the C name inside the class.
private func signal(_ pid: Int32, _ signal: Int32) {
    #if canImport(Glibc)
    _ = Glibc.kill(pid, signal)
    #else
    _ = Darwin.kill(pid, signal)
    #endif
}

extension Duration {
    /// The duration in seconds, as a Double (for messages).
    fileprivate var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
