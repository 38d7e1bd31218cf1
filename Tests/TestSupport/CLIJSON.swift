import ControlProtocol
import Foundation

/// Reads `tapswitchctl --json` output (schema: docs/json.md): one object with `"version": 1`; an
/// object payload's fields sit beside it, a list sits under one key (`{"version": 1, "fdb": [...]}`).
public enum CLIJSON {
    public static let version = 1

    /// Decodes `text` as `T`: the object without its `version`, or the one list it wraps.
    /// Throws if the version is missing or not ``version``.
    public static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        guard var object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestHelperError("tapswitchctl --json printed no JSON object: \(text)")
        }
        guard object.removeValue(forKey: "version") as? Int == version else {
            throw TestHelperError("tapswitchctl --json output lacks \"version\": \(version): \(text)")
        }
        let decoder = Wire.makeDecoder()
        do {
            return try decoder.decode(T.self, from: try JSONSerialization.data(withJSONObject: object))
        } catch {
            guard object.count == 1, let list = object.values.first as? [Any] else { throw error }
            return try decoder.decode(T.self, from: try JSONSerialization.data(withJSONObject: list))
        }
    }

    /// The error document `{"version": 1, "error": {"code", "message", "exitCode", ...}}`.
    public struct Failure: Decodable, Equatable, Sendable {
        public var code: String
        public var message: String
        public var exitCode: Int32
        public var vetoingExtension: String?
        public var vetoReason: String?

        public init(code: String, message: String, exitCode: Int32, vetoingExtension: String? = nil, vetoReason: String? = nil) {
            self.code = code
            self.message = message
            self.exitCode = exitCode
            self.vetoingExtension = vetoingExtension
            self.vetoReason = vetoReason
        }
    }

    public static func failure(_ text: String) throws -> Failure {
        struct Doc: Decodable { var version: Int; var error: Failure }
        let doc = try Wire.makeDecoder().decode(Doc.self, from: Data(text.utf8))
        guard doc.version == version else { throw TestHelperError("error document has version \(doc.version)") }
        return doc.error
    }
}
