import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A private `tapswitchd` for one test: temp socket and state dir, the repository's default config,
/// stderr captured to a file. Driven only through the `tapswitchctl` binary (`--json`).
///
/// ``stop()`` (also run by the owning ``Cleanup``) stops every VM it started — which deletes their
/// TAPs — then SIGTERMs the daemon and removes the temp directory.
final class SwitchDaemonHarness: Sendable {
    /// Directory holding the built `tapswitchd` and `tapswitchctl`.
    let binDir: String
    let directory: URL
    let socket: String
    let stderrPath: String
    private let process: Process

    /// Starts the daemon and waits until `tapswitchctl version` answers.
    init(cleanup: Cleanup) throws {
        binDir = try Self.locateBinDir()
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("tsw-e2e-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        socket = directory.appendingPathComponent("control.sock").path
        stderrPath = directory.appendingPathComponent("tapswitchd.log").path
        guard FileManager.default.createFile(atPath: stderrPath, contents: nil),
              let log = FileHandle(forWritingAtPath: stderrPath) else {
            throw HarnessError("cannot open \(stderrPath) for the daemon's log")
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: binDir + "/tapswitchd")
        process.arguments = [
            "--config", GuestImage.repositoryRoot.appendingPathComponent("config/tapswitchd.toml").path,
            "--socket", socket,
            "--state-dir", directory.appendingPathComponent("state").path,
            "--log-level", "debug",
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try? log.close()
        cleanup.add("stop tapswitchd") { [self] in stop() }
        do {
            try waitUntil("tapswitchd answers on \(socket)", timeout: .seconds(15), poll: .milliseconds(50)) {
                guard process.isRunning else {
                    throw HarnessError("tapswitchd exited (status \(process.terminationStatus)) during start-up\n\(daemonLog)")
                }
                return try ctl(["version"]).status == 0
            }
        } catch let error as WaitTimeout {
            throw HarnessError("\(error)\n\(daemonLog)")
        }
    }

    /// The daemon's stderr so far, framed for failure messages.
    var daemonLog: String {
        let text = FileManager.default.contents(atPath: stderrPath).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return "----- tapswitchd stderr -----\n\(text)----- end -----"
    }

    var isRunning: Bool { process.isRunning }

    /// Runs `tapswitchctl --socket SOCK ARGS`.
    @discardableResult
    func ctl(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run([binDir + "/tapswitchctl", "--socket", socket] + args, timeout: .seconds(15))
    }

    /// Runs `tapswitchctl --json ARGS`, requires exit 0 and decodes stdout as `T`.
    func json<T: Decodable>(_ type: T.Type, _ args: [String]) throws -> T {
        let result = try ctl(["--json"] + args)
        guard result.status == 0 else {
            throw HarnessError("tapswitchctl \(args.joined(separator: " ")) exited \(result.status): \(result.stderr)\n\(daemonLog)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(result.stdout.utf8))
        } catch {
            throw HarnessError("cannot decode `tapswitchctl --json \(args.joined(separator: " "))`: \(error)\n\(result.stdout)")
        }
    }

    /// `tapswitchctl vm start VM --nic TAP,mac=MAC[,vlan=N]` for one NIC; registers the TAP's deletion
    /// as a fallback in `cleanup`.
    func startVM(_ vm: String, tap: String, mac: String, vlan: Int? = nil, cleanup: Cleanup) throws {
        cleanup.deleteLink(tap)
        var nic = "\(tap),mac=\(mac)"
        if let vlan { nic += ",vlan=\(vlan)" }
        _ = try json(JSONValue.self, ["vm", "start", vm, "--nic", nic])
    }

    func stopVM(_ vm: String) throws {
        _ = try json(JSONValue.self, ["vm", "stop", vm])
    }

    func events() throws -> [LifecycleEvent] {
        try json([LifecycleEvent].self, ["events"])
    }

    func ports() throws -> [PortStatus] {
        try json(SwitchStatus.self, ["show"]).ports
    }

    func port(named name: String) throws -> PortStatus? {
        try ports().first { $0.name == name }
    }

    /// Polls the event log until an event of `kind` for port `name` beyond the first `after` of them
    /// exists; returns all events of that kind for the port.
    @discardableResult
    func waitForEvent(_ kind: String, port name: String, count: Int = 1, timeout: Duration = .seconds(15)) throws -> [LifecycleEvent] {
        var found: [LifecycleEvent] = []
        do {
            try waitUntil("\(count)× \(kind) for \(name)", timeout: timeout, poll: .milliseconds(50)) {
                found = try events().filter { $0.kind == kind && $0.portName == name }
                return found.count >= count
            }
        } catch let error as WaitTimeout {
            let log = (try? events().map(\.summary).joined(separator: "\n")) ?? "(events unavailable)"
            throw HarnessError("\(error); events:\n\(log)\n\(daemonLog)")
        }
        return found
    }

    /// Stops the VMs still present, then the daemon (SIGTERM leaves TAPs in place, hence the VM stops
    /// first), and removes the temp directory. Idempotent.
    func stop() {
        if process.isRunning {
            let vms = Set(((try? ports()) ?? []).compactMap { $0.nic?.vmName })
            for vm in vms { _ = try? ctl(["vm", "stop", vm]) }
            kill(process.processIdentifier, SIGTERM)
            let deadline = ContinuousClock.now + .seconds(10)
            while process.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        if ProcessInfo.processInfo.environment["TAPSWITCH_KEEP_GUEST_LOGS"] == nil {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// `TAPSWITCH_BIN_DIR`, else the first directory above the test binary that holds `tapswitchd`
    /// (SwiftPM puts test bundles and executables side by side in `.build/<config>`).
    static func locateBinDir() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let explicit = env["TAPSWITCH_BIN_DIR"] {
            guard access(explicit + "/tapswitchd", X_OK) == 0, access(explicit + "/tapswitchctl", X_OK) == 0 else {
                throw HarnessError("TAPSWITCH_BIN_DIR=\(explicit) holds no executable tapswitchd and tapswitchctl")
            }
            return explicit
        }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while dir.path != "/" {
            if access(dir.path + "/tapswitchd", X_OK) == 0, access(dir.path + "/tapswitchctl", X_OK) == 0 {
                return dir.path
            }
            dir = dir.deletingLastPathComponent()
        }
        throw HarnessError("""
            tapswitchd/tapswitchctl not found above \(CommandLine.arguments[0]); build them first \
            (swift build --product tapswitchd && swift build --product tapswitchctl) or set TAPSWITCH_BIN_DIR
            """)
    }
}

/// A failure of the end-to-end harness, with the context in the message.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One entry of `tapswitchctl --json events`.
struct LifecycleEvent: Decodable, Sendable {
    let seq: Int
    let kind: String
    let portId: Int
    let portName: String
    let vmName: String?
    let nicIndex: Int?
    let detail: String?

    var summary: String { "\(seq) \(kind) \(portName)\(vmName.map { " vm=\($0)" } ?? "")" }
}

/// The parts of `tapswitchctl --json show` the tests look at.
struct SwitchStatus: Decodable, Sendable {
    let ports: [PortStatus]
}

struct PortStatus: Decodable, Sendable {
    struct NIC: Decodable, Sendable {
        let state: String
        let vmName: String
    }
    struct Counters: Decodable, Sendable {
        let framesIn: Int
        let framesOut: Int
    }
    let id: Int
    let name: String
    let vlan: Int?
    let nic: NIC?
    let counters: Counters
}

/// Any JSON (the tests only need `vm start`/`vm stop` to succeed and print valid JSON).
struct JSONValue: Decodable, Sendable {
    init(from decoder: any Decoder) throws {
        _ = try decoder.singleValueContainer()
    }
}
