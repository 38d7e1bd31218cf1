import Foundation

/// Framing and JSON coding of control messages: newline-delimited JSON over a Unix stream socket.
///
/// One request per connection; the server answers with one line and closes, except for
/// `events` with `follow: true`, which streams one line per event until the client closes.
public enum Wire {
    /// Version of this message set, reported by `ping`/`version`.
    public static let protocolVersion = 1
    /// Largest request line accepted, newline included.
    public static let maxRequestBytes = 64 * 1024
    /// Default control socket path (overridden by `--socket` or `TAPSWITCH_SOCKET`).
    public static let defaultSocketPath = "/run/tapswitch/control.sock"
    /// Environment variable naming the control socket for `tapswitchctl`.
    public static let socketEnvironmentVariable = "TAPSWITCH_SOCKET"

    public static func makeEncoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(formatTimestamp(date))
        }
        return e
    }

    public static func makeDecoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { decoder in
            let c = try decoder.singleValueContainer()
            let text = try c.decode(String.self)
            guard let date = parseTimestamp(text) else {
                throw FieldError(field: codingPathString(decoder.codingPath), message: "'\(text)' is not an ISO 8601 timestamp")
            }
            return date
        }
        return d
    }

    /// ISO 8601 UTC with milliseconds, e.g. `2026-11-24T19:36:00.123Z`.
    public static func formatTimestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    public static func parseTimestamp(_ text: String) -> Date? {
        (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// Encodes a message as one line, newline included.
    public static func encodeLine<T: Encodable>(_ value: T) -> Data {
        // Our own types always encode; a failure here is a programming error.
        var data = (try? makeEncoder().encode(value)) ?? Data(#"{"ok":false,"error":"internal: response encoding failed"}"#.utf8)
        data.append(0x0A)
        return data
    }

    /// Decodes one request line (without its newline), turning every failure into a ``FieldError``
    /// that names the field.
    public static func decodeRequest(_ line: Data) throws(FieldError) -> ControlRequest {
        if line.count >= maxRequestBytes {
            throw FieldError(field: "", message: "request is \(line.count) bytes; the limit is \(maxRequestBytes)")
        }
        guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) else {
            throw FieldError(field: "", message: "empty request")
        }
        guard String(data: line, encoding: .utf8) != nil else {
            throw FieldError(field: "", message: "request is not valid UTF-8")
        }
        do {
            return try makeDecoder().decode(ControlRequest.self, from: line)
        } catch {
            throw fieldError(from: error)
        }
    }

    /// Decodes one response line. Lenient about unknown fields, so a newer daemon still works; an
    /// unknown value of a known field (a port type, an error code...) is a ``FieldError`` naming it.
    public static func decodeResponse(_ line: Data) throws(FieldError) -> ControlResponse {
        do {
            return try makeDecoder().decode(ControlResponse.self, from: line)
        } catch {
            throw fieldError(from: error, message: "response")
        }
    }
}
