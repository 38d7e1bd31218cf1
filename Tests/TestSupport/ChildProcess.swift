import Foundation
import Locking

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`: the part of `Foundation.Process` the tests use, with the
/// same names, so a test reads the same.
///
/// Why not `Foundation.Process`: on Swift 6.3.1 its `run()` copies the whole 256-byte `d_name` of each
/// `/proc/self/fd` entry it reads (to find the highest fd to close), which reads past glibc's readdir
/// buffer now and then and crashed a test process with a SIGSEGV in `memcpy` in CI (fixed upstream in
/// swift-corelibs-foundation after 6.3.1). Here the kernel closes the fds instead
/// (`posix_spawn_file_actions_addclosefrom_np`, which uses `close_range`).
///
/// Like `Process`: `nil` standard streams are inherited; a `Pipe` gives the child one end and the parent's
/// copy of that end is closed after the spawn (so the reader sees end-of-file when the child exits); a
/// `FileHandle` is duplicated and stays open in the parent. The child starts with no blocked signals and
/// default signal actions, whatever the spawning thread had.
///
/// ## Concurrency model
/// The configuration properties are set by one thread before ``run()``. After it, a thread of its own
/// waits for the child (`waitpid`) and publishes the status under a lock; ``waitUntilExit()`` and
/// ``isRunning`` read it; ``terminationHandler`` runs on that thread once the status is published.
public final class ChildProcess: @unchecked Sendable {
    public enum TerminationReason: Sendable { case exit, uncaughtSignal }

    public var executableURL: URL?
    public var arguments: [String]?
    /// Replaces the inherited environment when set.
    public var environment: [String: String]?
    /// `Pipe`, `FileHandle` or `nil` (inherit).
    public var standardInput: Any?
    public var standardOutput: Any?
    public var standardError: Any?
    public var terminationHandler: (@Sendable (ChildProcess) -> Void)?

    private struct State {
        var pid: pid_t = 0
        /// Raw `waitpid` status once the child was reaped.
        var status: Int32?
    }
    private let state = Locked(State())
    private let exited = DispatchGroup()

    public init() {}

    public var processIdentifier: Int32 { state.withLock { $0.pid } }

    public var isRunning: Bool { state.withLock { $0.pid != 0 && $0.status == nil } }

    /// The exit code, or the signal number when the child was killed by one (as `Process`); -1 while running.
    public var terminationStatus: Int32 {
        guard let status = state.withLock({ $0.status }) else { return -1 }
        return Self.exited(status) ? (status >> 8) & 0xff : status & 0x7f
    }

    public var terminationReason: TerminationReason {
        guard let status = state.withLock({ $0.status }) else { return .exit }
        return Self.exited(status) ? .exit : .uncaughtSignal
    }

    private static func exited(_ status: Int32) -> Bool { status & 0x7f == 0 }

    /// glibc declares it only with `_GNU_SOURCE`, which Swift's Glibc module is not built with; looked up
    /// by name instead, with the C calling convention.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    public func run() throws {
        guard let executableURL else { throw TestHelperError("ChildProcess.run: no executableURL") }
        guard state.withLock({ $0.pid }) == 0 else { throw TestHelperError("ChildProcess.run: already started") }
        let path = executableURL.path
        let argv = [path] + (arguments ?? [])
        let envp = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var closeInParent: [FileHandle] = []
        for (target, stream) in [(Int32(0), standardInput), (1, standardOutput), (2, standardError)] {
            let handle: FileHandle
            switch stream {
            case nil:
                continue
            case let pipe as Pipe:
                handle = target == 0 ? pipe.fileHandleForReading : pipe.fileHandleForWriting
                closeInParent.append(handle)
            case let file as FileHandle:
                handle = file
            default:
                throw TestHelperError("ChildProcess.run: standard stream \(target) must be a Pipe, a FileHandle or nil")
            }
            posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
        }
        // Every other fd is closed in the child (TAP fds, sockets, other children's pipes).
        guard let closeFrom = Self.addCloseFrom, closeFrom(&actions, 3) == 0 else {
            throw TestHelperError("ChildProcess.run: posix_spawn_file_actions_addclosefrom_np is not available (glibc >= 2.34)")
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in 1..<Int32(32) where signal != SIGKILL && signal != SIGSTOP { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var pid: pid_t = 0
        let result = withCStrings(argv) { cArgv in
            withCStrings(envp) { cEnvp in
                posix_spawn(&pid, path, &actions, &attributes, cArgv, cEnvp)
            }
        }
        guard result == 0 else {
            throw TestHelperError("cannot start \(path): \(String(cString: strerror(result)))")
        }
        for handle in closeInParent { try? handle.close() }
        state.withLock { $0.pid = pid }
        exited.enter()
        let handler = terminationHandler
        Thread { [self, pid] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            state.withLock { $0.status = status }
            exited.leave()
            handler?(self)
        }.start()
    }

    public func waitUntilExit() {
        guard state.withLock({ $0.pid }) != 0 else { return }
        exited.wait()
    }

    /// SIGTERM, if the child still runs.
    public func terminate() { send(SIGTERM) }

    /// SIGINT, if the child still runs.
    public func interrupt() { send(SIGINT) }

    private func send(_ signal: Int32) {
        // The waiter publishes the status right after the reap, so a recycled pid is not signalled in practice.
        state.withLock { s in
            if s.pid != 0 && s.status == nil { kill(s.pid, signal) }
        }
    }
}

/// A NULL-terminated `char *[]` of copies of `strings`, valid inside `body`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
