import Foundation

#if canImport(Glibc)
import Glibc
import Locking
#endif

/// Runs external commands (`ip`, `ethtool`, ...) with a time limit.
public enum Shell {
    /// Result of ``run(_:timeout:)``.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `args` (args[0] is looked up in PATH) and captures its output. `environment`, when given,
    /// replaces the inherited environment.
    ///
    /// On timeout the process gets SIGTERM, then SIGKILL a second later, and ``ShellError/timedOut`` is thrown.
    /// - Returns: exit status (128 + signal if killed by a signal), stdout and stderr.
    @discardableResult
    public static func run(
        _ args: [String], environment: [String: String]? = nil, timeout: Duration = .seconds(10)
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        precondition(!args.isEmpty, "Shell.run needs a command")
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        if let environment { process.environment = environment }
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice

        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }

        // Read both pipes concurrently so a chatty child cannot block on a full pipe. On threads of
        // their own: blocked readers on Dispatch's global queues are replaced only by its once-a-second
        // monitor on Linux, so under parallel tests the readers (and everyone's Dispatch work) queued
        // for seconds, and a command could finish before its output was read.
        let readers = DispatchGroup()
        let stdoutData = Locked(Data())
        let stderrData = Locked(Data())
        let outHandle = outPipe.fileHandleForReading
        let errHandle = errPipe.fileHandleForReading

        try process.run()
        for (handle, sink) in [(outHandle, stdoutData), (errHandle, stderrData)] {
            readers.enter()
            Thread {
                let data = handle.readDataToEndOfFile()
                sink.withLock { $0 = data }
                readers.leave()
            }.start()
        }

        if finished.wait(timeout: .now() + timeout.dispatchInterval) == .timedOut {
            process.terminate()
            if finished.wait(timeout: .now() + 1) == .timedOut {
                kill(process.processIdentifier, SIGKILL)
                finished.wait()
            }
            _ = readers.wait(timeout: .now() + 2)
            throw ShellError.timedOut(command: args, after: timeout)
        }
        _ = readers.wait(timeout: .now() + 5)
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return (
            status,
            String(decoding: stdoutData.withLock { $0 }, as: UTF8.self),
            String(decoding: stderrData.withLock { $0 }, as: UTF8.self)
        )
    }

    /// Runs `args` and throws ``ShellError/failed`` unless it exits with status 0; returns stdout.
    @discardableResult
    public static func check(_ args: [String], timeout: Duration = .seconds(10)) throws -> String {
        let result = try run(args, timeout: timeout)
        if result.status != 0 {
            throw ShellError.failed(command: args, status: result.status, stderr: result.stderr)
        }
        return result.stdout
    }
}

/// A failed ``Shell`` command.
public enum ShellError: Error, CustomStringConvertible {
    case timedOut(command: [String], after: Duration)
    case failed(command: [String], status: Int32, stderr: String)

    public var description: String {
        switch self {
        case let .timedOut(command, after):
            "`\(command.joined(separator: " "))` did not finish within \(after)"
        case let .failed(command, status, stderr):
            "`\(command.joined(separator: " "))` exited with status \(status): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }
}

extension Duration {
    /// This duration for Dispatch APIs (nanosecond resolution).
    public var dispatchInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(clamping: seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
    }
}
