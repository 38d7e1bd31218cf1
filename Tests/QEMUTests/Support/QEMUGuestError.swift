import Foundation

/// Failures of the QEMU test guest. Descriptions carry the guest's serial log and QEMU's stderr,
/// so a failing test shows what the guest saw.
enum QEMUGuestError: Error, CustomStringConvertible {
    case imageBuildFailed(status: Int32, output: String)
    case invalidSpec(guest: String, field: String, value: String, reason: String)
    case launchFailed(guest: String, reason: String)
    /// The marker did not appear before the deadline; the guest is still running.
    case timeout(guest: String, marker: String, seconds: Double, serialLog: String, qemuOutput: String)
    /// QEMU exited before the marker appeared.
    case exitedEarly(guest: String, marker: String, status: Int32, serialLog: String, qemuOutput: String)
    case exitTimeout(guest: String, seconds: Double, serialLog: String)
    case unexpectedResult(guest: String, line: String, serialLog: String)

    var description: String {
        switch self {
        case .imageBuildFailed(let status, let output):
            return "scripts/build-guest failed (exit \(status)); run scripts/install-deps first?\n\(output)"
        case .invalidSpec(let guest, let field, let value, let reason):
            return "guest '\(guest)': \(field) '\(value)' \(reason)"
        case .launchFailed(let guest, let reason):
            return "guest '\(guest)': cannot start qemu-system-x86_64: \(reason)"
        case .timeout(let guest, let marker, let seconds, let log, let qemu):
            return "guest '\(guest)': no '\(marker)' within \(seconds)s" + Self.logs(log, qemu)
        case .exitedEarly(let guest, let marker, let status, let log, let qemu):
            return "guest '\(guest)': QEMU exited (status \(status)) before '\(marker)'" + Self.logs(log, qemu)
        case .exitTimeout(let guest, let seconds, let log):
            return "guest '\(guest)': QEMU still running after \(seconds)s" + Self.logs(log, "")
        case .unexpectedResult(let guest, let line, let log):
            return "guest '\(guest)': unexpected result '\(line)'" + Self.logs(log, "")
        }
    }

    private static func logs(_ serial: String, _ qemu: String) -> String {
        var text = "\n----- serial log -----\n" + serial
        if !qemu.isEmpty { text += "\n----- qemu stderr -----\n" + qemu }
        return text + "\n----- end -----"
    }
}

/// One `TSW-RESULT` line from the guest, e.g. `TSW-RESULT tcp ok 972000000`.
struct GuestResult: Sendable, Equatable {
    /// What was measured: `ping`, `noping`, `tcp`, `iperf-server`.
    let kind: String
    let ok: Bool
    /// The words after `ok`/`fail` (e.g. `["sent=5", "received=5", "peer=10.99.0.2"]`).
    let details: [String]
    /// The whole line from `TSW-RESULT` on.
    let line: String

    /// Parses a serial-log line containing `TSW-RESULT`; nil when it has none.
    init?(line: String) {
        guard let range = line.range(of: "TSW-RESULT ") else { return nil }
        let words = line[range.upperBound...].split(separator: " ").map(String.init)
        guard words.count >= 2, words[1] == "ok" || words[1] == "fail" else { return nil }
        kind = words[0]
        ok = words[1] == "ok"
        details = Array(words.dropFirst(2))
        self.line = String(line[range.lowerBound...])
    }

    /// For `tcp ok N`: the receiver's throughput in bits per second.
    var bitsPerSecond: Double? {
        guard kind == "tcp", ok, let first = details.first else { return nil }
        return Double(first)
    }

    /// A `key=value` detail, e.g. `value("received")`.
    func value(_ key: String) -> String? {
        details.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
}
