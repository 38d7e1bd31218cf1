import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Log levels accepted by `--log-level`.
public enum LogLevelName: String, CaseIterable, Sendable {
    case trace, debug, info, notice, warning, error, critical

    public var level: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        case .critical: .critical
        }
    }
}

/// Writes log lines to stderr. Under systemd (stderr connected to the journal, as `$JOURNAL_STREAM`
/// says) each line starts with a `<N>` syslog priority, which journald turns into the entry's
/// priority, and carries no timestamp (the journal adds one). Otherwise: time, level, message.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let journal: Bool

    /// Serialises writes so lines from different threads never interleave.
    private static let lock = Mutex(())

    public init(label: String, level: Logger.Level, journal: Bool = StderrLogHandler.stderrIsJournal()) {
        self.label = label
        self.logLevel = level
        self.journal = journal
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let p = metadataProvider?.get() { merged.merge(p) { _, new in new } }
        if let m = event.metadata { merged.merge(m) { _, new in new } }
        let meta = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line: String
        if journal {
            line = "<\(Self.syslogPriority(event.level))>\(event.message)\(meta)\n"
        } else {
            line = "\(Self.timestamp()) \(event.level.rawValue.uppercased()) \(label): \(event.message)\(meta)\n"
        }
        Self.lock.withLock { _ in
            _ = line.utf8CString.withUnsafeBufferPointer { write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
        }
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// True when `$JOURNAL_STREAM` (`DEV:INODE`) names the file stderr is connected to.
    public static func stderrIsJournal() -> Bool {
        guard let v = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = v.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(STDERR_FILENO, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }
}

/// Installs ``StderrLogHandler`` as the process-wide handler; later calls only change the level.
public enum DaemonLogging {
    private static let bootstrapped = Mutex(false)
    private static let currentLevel = Mutex(Logger.Level.info)

    public static func bootstrap(level: Logger.Level) {
        currentLevel.withLock { $0 = level }
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first {
            LoggingSystem.bootstrap { label in
                StderrLogHandler(label: label, level: currentLevel.withLock { $0 })
            }
        }
    }
}
