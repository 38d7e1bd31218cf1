import ControlProtocol
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
import Locking
#endif

/// A private `tapswitchd` for one test, driven only through the built `tapswitchctl` binary.
///
/// It lives in a temp directory: `run/control.sock`, `state/`, `tapswitchd.log` (stdout and stderr of
/// every run, appended) and, for ``Config/text(_:)``, `tapswitchd.toml`. It can be stopped or SIGKILLed
/// and started again on the same socket, state dir and config (a restart).
///
/// ```swift
/// let cleanup = Cleanup()
/// defer { cleanup.run() }
/// let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
/// try await d.start()
/// let events = try await d.events()
/// ```
/// The ``Cleanup`` stops a daemon still running (``vm stop`` of every VM it lists first, so their TAPs go,
/// then SIGTERM, SIGKILL after 10 s) and removes the directory, unless `TAPSWITCH_KEEP_GUEST_LOGS` is set.
///
/// Every method exists twice: blocking, for synchronous tests, and `async`, which runs the blocking
/// process I/O on a thread of its own (``offPool(_:)``), never on the cooperative pool.
public final class DaemonUnderTest: Sendable {
    /// Where the daemon's config comes from.
    public enum Config: Sendable {
        /// This text, written to `tapswitchd.toml` in the temp directory.
        case text(String)
        /// An existing file.
        case file(String)

        /// The repository's `config/tapswitchd.toml` (enables duplicate-mac-guard, touches no existing device).
        public static var shipped: Config { .file(Products.repositoryRoot + "/config/tapswitchd.toml") }
    }

    /// The temp directory holding socket, state dir, log and written config.
    public let dir: TempDir
    public let socket: String
    public let stateDir: String
    public let configPath: String
    public let logPath: String
    private let environment: [String: String]
    private let process = Locked<ChildProcess?>(nil)

    /// Environment variables never inherited from the test process (the caller's `environment` may set them).
    private static let scrubbed = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]
    /// The executable: `tapswitchd`, or `tapswitchd-fake` (the same daemon on in-memory devices).
    private let binary: String
    /// The network namespace the daemon runs in (`ip netns exec NS tapswitchd ...`); nil: the test's.
    public let netns: String?

    /// Prepares the directory (nothing runs yet: see ``start()``) and registers the daemon's stop and the
    /// directory's removal with `cleanup`.
    /// - Parameter environment: added to the test process's environment without
    ///   `NOTIFY_SOCKET` and `WATCHDOG_*`.
    /// - Parameter binary: `tapswitchd` (real devices, needs root) or `tapswitchd-fake` (device-free).
    /// - Parameter netns: run the daemon inside this network namespace (a "host" of a multi-host test);
    ///   its control socket is a file, so `tapswitchctl` reaches it from anywhere.
    public init(config: Config, environment: [String: String] = [:], binary: String = "tapswitchd", netns: String? = nil,
                cleanup: Cleanup) throws {
        // Daemons are what made parallel runs starve (see HeavyTestTrait): a suite that starts one takes turns.
        if TestThreadExecutor.current == nil {
            Issue.record("a test that starts a daemon must be .heavy (add .heavy to its @Suite or @Test): see HeavyTestTrait")
        }
        self.binary = binary
        self.netns = netns
        let dir = try TempDir("tswd")
        self.dir = dir
        socket = dir.file("run/control.sock")
        stateDir = dir.file("state")
        logPath = dir.file("tapswitchd.log")
        self.environment = environment
        cleanup.add("remove \(dir.path)") {
            if ProcessInfo.processInfo.environment["TAPSWITCH_KEEP_GUEST_LOGS"] == nil { dir.remove() }
        }
        switch config {
        case .text(let text): configPath = try dir.write("tapswitchd.toml", text)
        case .file(let path): configPath = path
        }
        guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
            throw TestHelperError("cannot create \(logPath) for the daemon's log")
        }
        cleanup.add("stop tapswitchd") { [self] in shutDown() }
    }

    /// The daemon's log so far (all runs).
    public var logText: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// ``logText`` framed for failure messages.
    public var log: String { "----- tapswitchd log -----\n\(logText)----- end -----" }

    public var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    // MARK: - Blocking

    /// Spawns tapswitchd without waiting for it (``waitReady(timeout:)`` does).
    public func launch() throws {
        let p = ChildProcess()
        let arguments = ["--config", configPath, "--socket", socket, "--state-dir", stateDir, "--log-level", "debug"]
        if let netns {
            // `ip netns exec` execs the daemon itself (same process): signals reach it directly.
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["ip", "netns", "exec", netns, try Products.path(binary)] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: try Products.path(binary))
            p.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        for key in Self.scrubbed { env.removeValue(forKey: key) }
        env.merge(environment) { _, new in new }
        p.environment = env
        // A file, unlike a pipe nobody reads, never blocks the daemon.
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        defer { try? logHandle.close() }
        try logHandle.seekToEnd()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = logHandle
        p.standardError = logHandle
        try p.run()
        process.withLock { $0 = p }
    }

    /// Polls `tapswitchctl version` until it answers; throws with the log if the daemon exits or the
    /// time runs out.
    public func waitReady(timeout: Duration = .seconds(20)) throws {
        guard let p = process.withLock({ $0 }) else { throw TestHelperError("waitReady before launch") }
        do {
            try waitUntil("tapswitchd answers on \(socket)", timeout: timeout, poll: .milliseconds(20)) {
                guard p.isRunning else {
                    throw TestHelperError("tapswitchd exited (status \(p.terminationStatus)) during start-up\n\(log)")
                }
                return try ctl("version").status == 0
            }
        } catch let error as WaitTimeout {
            throw TestHelperError("\(error)\n\(log)")
        }
    }

    /// ``launch()`` then ``waitReady(timeout:)``.
    public func start() throws {
        try launch()
        try waitReady()
    }

    /// Runs `tapswitchctl --socket SOCKET ARGS`.
    @discardableResult
    public func ctl(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run([try Products.path("tapswitchctl"), "--socket", socket] + args, timeout: .seconds(20))
    }

    @discardableResult
    public func ctl(_ args: String...) throws -> (status: Int32, stdout: String, stderr: String) { try ctl(args) }

    /// Runs `tapswitchctl ARGS --json`, requires exit 0 and decodes stdout as `T`.
    public func json<T: Decodable>(_ type: T.Type, _ args: String...) throws -> T {
        try decode(type, args, try ctl(args + ["--json"]))
    }

    public func events() throws -> [SwitchEvent] { try json([SwitchEvent].self, "events") }
    public func show() throws -> SwitchSnapshot { try json(SwitchSnapshot.self, "show") }
    public func port(named name: String) throws -> PortInfo? { try show().ports.first { $0.name == name } }

    /// Polls `events --json` until `done` holds; returns the events then. Throws with the events and the
    /// log on timeout.
    @discardableResult
    public func waitForEvents(_ what: String, timeout: Duration = .seconds(15), _ done: ([SwitchEvent]) -> Bool) throws -> [SwitchEvent] {
        var last: [SwitchEvent] = []
        do {
            try waitUntil(what, timeout: timeout, poll: .milliseconds(25)) {
                last = try events()
                return done(last)
            }
        } catch is WaitTimeout {
            throw timedOut(what, timeout, last)
        }
        return last
    }

    /// Waits for at least `count` events of `kind` on port `port`; returns those events.
    @discardableResult
    public func waitForEvents(_ kind: EventKind, port: String, count: Int = 1, timeout: Duration = .seconds(15)) throws -> [SwitchEvent] {
        try waitForEvents("\(count)× \(kind.rawValue) for \(port)", timeout: timeout) { Self.matching($0, kind, port).count >= count }
            .filter { $0.kind == kind && $0.portName == port }
    }

    /// Sends `sig` to the running daemon (e.g. SIGHUP for a reload).
    public func signal(_ sig: Int32) {
        guard let p = process.withLock({ $0 }), p.isRunning else { return }
        kill(p.processIdentifier, sig)
    }

    /// SIGKILL (a crash: no cleanup by the daemon at all); returns once the process is gone.
    public func sigkill() throws {
        guard let p = process.withLock({ $0 }) else { return }
        kill(p.processIdentifier, SIGKILL)
        do {
            try waitUntil("tapswitchd gone after SIGKILL", timeout: .seconds(10), poll: .milliseconds(10)) { !p.isRunning }
        } catch is WaitTimeout {
            throw TestHelperError("tapswitchd survived SIGKILL")
        }
        p.waitUntilExit()
    }

    /// SIGTERM, then the exit status. A daemon still running after 15 s gets SIGKILL and a recorded issue.
    public func stop() -> Int32 {
        let (status, ignored) = terminate(within: .seconds(15))
        if ignored { Issue.record("tapswitchd ignored SIGTERM\n\(log)") }
        return status
    }

    // MARK: - Async: the same, with the blocking parts on a thread of their own

    public func start() async throws { try await offPool { try self.start() } }
    public func waitReady(timeout: Duration = .seconds(20)) async throws { try await offPool { try self.waitReady(timeout: timeout) } }

    @discardableResult
    public func ctl(_ args: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await offPool { try self.ctl(args) }
    }

    @discardableResult
    public func ctl(_ args: String...) async throws -> (status: Int32, stdout: String, stderr: String) { try await ctl(args) }

    public func json<T: Decodable>(_ type: T.Type, _ args: String...) async throws -> T {
        try decode(type, args, try await ctl(args + ["--json"]))
    }

    public func events() async throws -> [SwitchEvent] { try await json([SwitchEvent].self, "events") }
    public func show() async throws -> SwitchSnapshot { try await json(SwitchSnapshot.self, "show") }
    public func port(named name: String) async throws -> PortInfo? { try await show().ports.first { $0.name == name } }

    /// Polls `events --json` until `done` holds (sleeping between polls on the pool, not blocking it).
    @discardableResult
    public func waitForEvents(_ what: String, timeout: Duration = .seconds(15), _ done: ([SwitchEvent]) -> Bool) async throws -> [SwitchEvent] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let all = try await events()
            if done(all) { return all }
            if ContinuousClock.now >= deadline { throw timedOut(what, timeout, all) }
            try await Task.sleep(for: .milliseconds(25))
        }
    }

    @discardableResult
    public func waitForEvents(_ kind: EventKind, port: String, count: Int = 1, timeout: Duration = .seconds(15)) async throws -> [SwitchEvent] {
        try await waitForEvents("\(count)× \(kind.rawValue) for \(port)", timeout: timeout) { Self.matching($0, kind, port).count >= count }
            .filter { $0.kind == kind && $0.portName == port }
    }

    public func sigkill() async throws { try await offPool { try self.sigkill() } }

    public func stop() async throws -> Int32 {
        let (status, ignored) = try await offPool { self.terminate(within: .seconds(15)) }
        // Recorded here, not on the helper thread: the issue needs the test's task context.
        if ignored { Issue.record("tapswitchd ignored SIGTERM\n\(log)") }
        return status
    }

    // MARK: - Internals

    private func decode<T: Decodable>(_ type: T.Type, _ args: [String], _ r: (status: Int32, stdout: String, stderr: String)) throws -> T {
        guard r.status == 0 else {
            throw TestHelperError("tapswitchctl \(args.joined(separator: " ")) --json exited \(r.status): \(r.stderr)\n\(log)")
        }
        do {
            return try CLIJSON.decode(T.self, r.stdout)
        } catch {
            throw TestHelperError("cannot decode `tapswitchctl \(args.joined(separator: " ")) --json` as \(T.self): \(error)\n\(r.stdout)")
        }
    }

    private static func matching(_ events: [SwitchEvent], _ kind: EventKind, _ port: String) -> [SwitchEvent] {
        events.filter { $0.kind == kind && $0.portName == port }
    }

    private func timedOut(_ what: String, _ timeout: Duration, _ events: [SwitchEvent]) -> TestHelperError {
        TestHelperError("\(what): not seen within \(timeout); events:\n\(events.map(\.summary).joined(separator: "\n"))\n\(log)")
    }

    /// SIGTERM, wait up to `limit`, SIGKILL if still running; the exit status and whether SIGKILL was needed.
    private func terminate(within limit: Duration) -> (status: Int32, ignoredSIGTERM: Bool) {
        guard let p = process.withLock({ $0 }) else { return (-1, false) }
        if p.isRunning { kill(p.processIdentifier, SIGTERM) }
        let exited = (try? waitUntil(timeout: limit, poll: .milliseconds(20)) { !p.isRunning }) != nil
        if !exited { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        return (p.terminationStatus, !exited)
    }

    /// Cleanup path: `vm stop` every VM still listed (SIGTERM leaves TAPs in place), then stop the daemon.
    private func shutDown() {
        guard isRunning else { return }
        let vms = Set(((try? show())?.ports ?? []).compactMap { $0.nic?.vmName })
        for vm in vms { _ = try? ctl("vm", "stop", vm, "--force") }
        _ = terminate(within: .seconds(10))
    }
}

extension SwitchEvent {
    /// One line for failure messages: `SEQ KIND PORT [vm=VM] [restore] [(DETAIL)]`.
    public var summary: String {
        "\(seq) \(kind.rawValue) \(portName)\(vmName.map { " vm=\($0)" } ?? "")\(restore ? " restore" : "")\(detail.map { " (\($0))" } ?? "")"
    }
}
