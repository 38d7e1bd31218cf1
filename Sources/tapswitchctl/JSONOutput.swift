import ControlProtocol
import Foundation

/// `--json` output: every document is one JSON object with a top-level `"version"` (the schema
/// version below, documented in docs/json.md). Objects (show, version, a followed event...) get
/// the field beside their own; lists are wrapped under a name (`{"version": 1, "fdb": [...]}`).
/// Errors are `{"version": 1, "error": {"code", "message", "exitCode", ...}}`, also on stdout.
enum JSONOutput {
    /// Bumped when a field changes meaning or disappears (adding fields does not bump it).
    static let schemaVersion = 1

    /// True when `--json` was given (before a `--`), also when parsing the rest failed.
    static var requested: Bool {
        CommandLine.arguments.dropFirst().prefix { $0 != "--" }.contains("--json")
    }

    /// An object's JSON with `"version"` added beside its fields.
    static func object<T: Encodable>(_ value: T, pretty: Bool = true) -> Data {
        encode(Versioned(value: value), pretty: pretty)
    }

    /// A list's JSON as `{"version": N, key: [...]}`.
    static func list<T: Encodable>(_ items: [T], key: String, pretty: Bool = true) -> Data {
        encode(Versioned(value: Keyed(key: key, items: items)), pretty: pretty)
    }

    /// `{"version": N, "error": {...}}` on one line (it may end an `events --follow` stream of lines).
    static func error(_ failure: ErrorBody) -> Data { object(["error": failure], pretty: false) }

    struct ErrorBody: Encodable {
        /// A ``SwitchError/Code`` wire name when the daemon refused the request, else `usage`
        /// (bad command line) or `unreachable` (no daemon, broken connection).
        var code: String
        var message: String
        var exitCode: Int32
        var vetoingExtension: String?
        var vetoReason: String?
    }

    private static func encode<T: Encodable>(_ value: T, pretty: Bool) -> Data {
        // Our own types always encode; a failure here is a programming error, still reported as JSON.
        (try? Wire.makeEncoder(pretty: pretty).encode(value))
            ?? Data(#"{"error":{"code":"system","message":"internal: JSON encoding failed","exitCode":1},"version":1}"#.utf8)
    }

    private struct Versioned<T: Encodable>: Encodable {
        var value: T
        func encode(to encoder: any Encoder) throws {
            // The value writes its fields into the top-level object, then the version joins them.
            try value.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(JSONOutput.schemaVersion, forKey: Key("version"))
        }
    }

    private struct Keyed<T: Encodable>: Encodable {
        var key: String
        var items: [T]
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(items, forKey: Key(key))
        }
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// Prints an object as pretty JSON with its `"version"` on stdout.
func printJSON<T: Encodable>(_ value: T) {
    print(String(decoding: JSONOutput.object(value), as: UTF8.self))
}

/// Prints a list as pretty JSON, `{"version": N, key: [...]}`, on stdout.
func printJSON<T: Encodable>(_ items: [T], key: String) {
    print(String(decoding: JSONOutput.list(items, key: key), as: UTF8.self))
}
