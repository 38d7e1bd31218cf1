/// Strict JSON decoding: `JSONDecoder` silently ignores unknown keys and reports type errors in
/// Swift terms, so every control type decodes through these helpers, which reject unknown fields
/// and turn `DecodingError` into one line naming the JSON path (`vm.nics[0].mtu`).

/// A coding key that accepts any string, used to list the keys an object really has.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
    init(_ s: String) { self.stringValue = s }
}

/// `vm.nics[0].mtu` from a coding path.
func codingPathString(_ path: [any CodingKey], appending key: String? = nil) -> String {
    var out = ""
    for k in path {
        if let i = k.intValue, k.stringValue.hasPrefix("Index") || k.stringValue == String(i) {
            out += "[\(i)]"
        } else {
            out += out.isEmpty ? k.stringValue : "." + k.stringValue
        }
    }
    if let key { out += out.isEmpty ? key : "." + key }
    return out
}

/// A keyed view of a JSON object that has been checked for unknown fields.
struct StrictObject {
    let container: KeyedDecodingContainer<AnyKey>
    let path: [any CodingKey]

    /// Fails with `unknown field 'path.key'` if the object holds a key not in `allowed`
    /// (nil: any key, for a first look at a discriminator such as `op`).
    init(_ decoder: any Decoder, allowed: Set<String>?) throws {
        path = decoder.codingPath
        let c: KeyedDecodingContainer<AnyKey>
        do {
            c = try decoder.container(keyedBy: AnyKey.self)
        } catch DecodingError.typeMismatch {
            let where_ = codingPathString(decoder.codingPath)
            throw FieldError(field: where_.isEmpty ? "request" : where_, message: "expected a JSON object")
        }
        // Sorted so the message is stable when several keys are wrong.
        if let allowed, let unknown = c.allKeys.map(\.stringValue).filter({ !allowed.contains($0) }).sorted().first {
            throw FieldError(field: codingPathString(path, appending: unknown),
                             message: "unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        container = c
    }

    func field(_ key: String) -> String { codingPathString(path, appending: key) }

    func has(_ key: String) -> Bool { container.contains(AnyKey(key)) }

    func require<T: Decodable>(_ type: T.Type, _ key: String) throws -> T {
        guard container.contains(AnyKey(key)) else { throw FieldError(field: field(key), message: "missing required field") }
        guard try !container.decodeNil(forKey: AnyKey(key)) else { throw FieldError(field: field(key), message: "must not be null") }
        return try container.decode(T.self, forKey: AnyKey(key))
    }

    func optional<T: Decodable>(_ type: T.Type, _ key: String) throws -> T? {
        try container.decodeIfPresent(T.self, forKey: AnyKey(key))
    }
}

/// Turns any error from decoding a control message (`what`: request or response) into a ``FieldError``.
func fieldError(from error: any Error, message what: String = "request") -> FieldError {
    if let e = error as? FieldError { return e }
    guard let d = error as? DecodingError else { return FieldError(field: "", message: "\(error)") }
    switch d {
    case .typeMismatch(let type, let ctx):
        return FieldError(field: nonEmpty(codingPathString(ctx.codingPath)), message: "expected \(jsonTypeName(type))")
    case .valueNotFound(let type, let ctx):
        return FieldError(field: nonEmpty(codingPathString(ctx.codingPath)), message: "expected \(jsonTypeName(type)), got null")
    case .keyNotFound(let key, let ctx):
        return FieldError(field: codingPathString(ctx.codingPath, appending: key.stringValue), message: "missing required field")
    case .dataCorrupted(let ctx):
        if ctx.codingPath.isEmpty {
            return FieldError(field: "", message: "\(what) is not valid JSON")
        }
        return FieldError(field: codingPathString(ctx.codingPath), message: ctx.debugDescription)
    @unknown default:
        return FieldError(field: "", message: "\(d)")
    }
}

private func nonEmpty(_ s: String) -> String { s.isEmpty ? "request" : s }

private func jsonTypeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Bool.Type: return "true or false"
    case is Int.Type, is Int64.Type, is UInt32.Type, is UInt64.Type, is Int32.Type, is UInt16.Type: return "an integer"
    case is Double.Type: return "a number"
    default:
        let name = String(describing: type)
        if name.hasPrefix("Array") { return "an array" }
        if name.hasPrefix("Dictionary") { return "a JSON object" }
        return "a \(name) value"
    }
}
