import Foundation
import LinuxNet
import Logging
#if canImport(Glibc)
import Glibc
import Locking
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
/// says) each entry goes to journald's native socket instead, with its metadata as journal fields
/// (``journalEntry(level:label:message:metadata:)``); if that socket does not take it, the line goes
/// to stderr starting with a `<N>` syslog priority and without a timestamp (the journal adds one).
/// Otherwise: time, level, message, logfmt metadata.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let journal: Bool
    /// journald's native socket, when logging to the journal.
    private let native: JournalSocket?

    /// Serialises writes so lines from different threads never interleave.
    private static let lock = Locked(())

    public init(label: String, level: Logger.Level, journal: Bool = StderrLogHandler.stderrIsJournal(), native: JournalSocket? = nil) {
        self.label = label
        self.logLevel = level
        self.journal = journal
        self.native = native
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let p = metadataProvider?.get() { merged.merge(p) { _, new in new } }
        if let m = event.metadata { merged.merge(m) { _, new in new } }
        if let native, native.send(Self.journalEntry(level: event.level, label: label, message: "\(event.message)", metadata: merged)) {
            return
        }
        let line = format(level: event.level, message: "\(event.message)", metadata: merged)
        Self.lock.withLock { _ in
            _ = line.utf8CString.withUnsafeBufferPointer { write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
        }
    }

    /// One log entry as one line: values come from clients and config files, so control characters
    /// in the message are escaped and metadata values are quoted logfmt-style (``logfmtValue(_:)``):
    /// a newline or NUL in a request field can never start a forged entry.
    public func format(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        let meta = metadata.isEmpty ? "" : " " + metadata.sorted { $0.key < $1.key }
            .map { "\(Self.escapeControl($0.key))=\(Self.logfmtValue("\($0.value)"))" }.joined(separator: " ")
        let text = Self.escapeControl(message)
        if journal { return "<\(Self.syslogPriority(level))>\(text)\(meta)\n" }
        return "\(Self.timestamp()) \(level.rawValue.uppercased()) \(label): \(text)\(meta)\n"
    }

    /// A character that would end or corrupt a line: C0 controls, DEL, C1 controls, and the Unicode
    /// line and paragraph separators.
    static func isControl(_ c: Unicode.Scalar) -> Bool {
        c.value < 0x20 || (0x7F...0x9F).contains(c.value) || c.value == 0x2028 || c.value == 0x2029
    }

    /// `\n`, `\r`, `\t`, `\0` and `\u{XX}` for control characters; everything else as it is.
    static func escapeControl(_ s: String, alsoQuote: Bool = false) -> String {
        guard s.unicodeScalars.contains(where: { isControl($0) || (alsoQuote && ($0 == "\"" || $0 == "\\")) }) else { return s }
        var out = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            switch c {
            case "\n": out.append(contentsOf: #"\n"#.unicodeScalars)
            case "\r": out.append(contentsOf: #"\r"#.unicodeScalars)
            case "\t": out.append(contentsOf: #"\t"#.unicodeScalars)
            case "\0": out.append(contentsOf: #"\0"#.unicodeScalars)
            case "\"" where alsoQuote: out.append(contentsOf: #"\""#.unicodeScalars)
            case "\\" where alsoQuote: out.append(contentsOf: #"\\"#.unicodeScalars)
            default:
                if isControl(c) {
                    out.append(contentsOf: "\\u{\(String(c.value, radix: 16))}".unicodeScalars)
                } else {
                    out.append(c)
                }
            }
        }
        return String(out)
    }

    /// logfmt: bare when the value has no space, `=`, quote, backslash or control character; else in
    /// double quotes with those escaped. Empty values are `""`.
    static func logfmtValue(_ s: String) -> String {
        let bare = !s.isEmpty && !s.unicodeScalars.contains {
            $0 == " " || $0 == "=" || $0 == "\"" || $0 == "\\" || isControl($0) || $0.properties.isWhitespace
        }
        return bare ? s : "\"\(escapeControl(s, alsoQuote: true))\""
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
    private static let bootstrapped = Locked(false)
    private static let currentLevel = Locked(Logger.Level.info)

    public static func bootstrap(level: Logger.Level) {
        currentLevel.withLock { $0 = level }
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first {
            // Under systemd: structured entries through the native protocol (one socket for the process).
            let journal = StderrLogHandler.stderrIsJournal()
            let native = journal ? JournalSocket() : nil
            LoggingSystem.bootstrap { label in
                StderrLogHandler(label: label, level: currentLevel.withLock { $0 }, journal: journal, native: native)
            }
        }
    }
}

extension StderrLogHandler {
    /// One entry in journald's native protocol: `MESSAGE` (the text and the metadata as logfmt, as a
    /// terminal would show it), `PRIORITY`, `SYSLOG_IDENTIFIER`, and each metadata key as a field of
    /// its own, upper-cased (`vm` -> `VM`, `port` -> `PORT`, `event` -> `EVENT`, `extension` ->
    /// `EXTENSION`), so `journalctl -u tapswitchd VM=web1` finds a VM's entries. Values with a
    /// newline use the protocol's length-prefixed form; nothing in a value can start another field.
    public static func journalEntry(level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> [UInt8] {
        var out: [UInt8] = []
        func field(_ key: String, _ value: String) {
            let v = Array(value.utf8)
            out += Array(key.utf8)
            if v.contains(10) {
                out.append(10)
                var n = UInt64(v.count).littleEndian
                withUnsafeBytes(of: &n) { out += $0 }
                out += v
            } else {
                out.append(UInt8(ascii: "="))
                out += v
            }
            out.append(10)
        }
        let meta = metadata.sorted { $0.key < $1.key }
        let logfmt = meta.map { "\(escapeControl($0.key))=\(logfmtValue("\($0.value)"))" }.joined(separator: " ")
        field("MESSAGE", message + (logfmt.isEmpty ? "" : " " + logfmt))
        field("PRIORITY", String(syslogPriority(level)))
        field("SYSLOG_IDENTIFIER", label)
        for (k, v) in meta {
            guard let name = journalFieldName(k) else { continue }
            field(name, "\(v)")
        }
        return out
    }

    /// A metadata key as a journal field name: A-Z, 0-9 and `_`, not starting with `_` or a digit
    /// (those are the journal's own), at most 64 characters; reserved names get a `TSW_` prefix.
    static func journalFieldName(_ key: String) -> String? {
        var name = String(key.uppercased().map { c -> Character in
            (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") ? c : "_"
        })
        if name.isEmpty { return nil }
        if name.first == "_" || name.first!.isNumber || ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "MESSAGE_ID", "CODE_FILE", "CODE_LINE", "CODE_FUNC"].contains(name) {
            name = "TSW_" + name
        }
        return String(name.prefix(64))
    }
}
