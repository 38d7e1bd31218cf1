/// A parser for the TOML subset the config file uses, keeping the line of every key and table so
/// that every error (syntax or semantic) can be reported as `file:line: what is wrong`.
///
/// Supported: `#` comments; `[table]` and `[a.b]` headers; `[[array.of.tables]]` including nested
/// ones such as `[[vm.nic]]` (which attach to the latest `[[vm]]`); bare keys (`A-Z a-z 0-9 _ -`);
/// values: basic strings `"..."` (escapes `\" \\ \n \t \r \uXXXX`), literal strings `'...'`,
/// decimal integers (`_` separators allowed), `true`/`false`, and arrays of strings (may span lines,
/// trailing comma allowed). Not supported, and reported as such: inline tables, dotted or quoted
/// keys, floats, dates, multi-line strings, arrays of non-strings.

/// One problem in a config file.
public struct ConfigIssue: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = Self.bounded(message)
    }

    /// Longest message kept whole; a message quoting a huge value keeps its start and end.
    public static let maxMessageLength = 400

    /// Messages quote the offending value: never echo a megabyte of it back.
    static func bounded(_ message: String) -> String {
        guard message.utf8.count > maxMessageLength else { return message }
        let scalars = message.unicodeScalars
        guard scalars.count > maxMessageLength else { return message }
        let keep = maxMessageLength / 2
        let head = String(String.UnicodeScalarView(scalars.prefix(keep)))
        let tail = String(String.UnicodeScalarView(scalars.suffix(keep)))
        return "\(head)…(\(scalars.count - 2 * keep) characters left out)…\(tail)"
    }

    public var description: String { "\(file):\(line): \(message)" }
}

/// A TOML value with the line it was written on.
struct TOMLValue {
    enum Kind {
        case string(String)
        case integer(Int)
        case bool(Bool)
        case stringArray([String])
    }
    var kind: Kind
    var line: Int

    var typeName: String {
        switch kind {
        case .string: "a string"
        case .integer: "an integer"
        case .bool: "a boolean"
        case .stringArray: "an array of strings"
        }
    }
}

/// A table: ordered keys, each a value, a sub-table or an array of tables.
final class TOMLTable {
    enum Entry {
        case value(TOMLValue)
        case table(TOMLTable)
        case tableArray([TOMLTable])
    }

    /// Dotted name, e.g. `vm.nic`; empty for the root.
    let name: String
    /// Line of the header (0 for the root, or for a table only created implicitly).
    var line: Int
    /// Whether a `[name]` header defined it (to reject a second definition).
    var explicitlyDefined = false
    private(set) var keys: [String] = []
    private(set) var entries: [String: Entry] = [:]
    /// Line where each key was set.
    private(set) var keyLines: [String: Int] = [:]

    init(name: String, line: Int) {
        self.name = name
        self.line = line
    }

    subscript(key: String) -> Entry? { entries[key] }

    func lineOf(_ key: String) -> Int { keyLines[key] ?? line }

    /// Appends to the array of tables at `key` in place (the array is moved out of `entries` first, so
    /// it is never copied: appending 40k `[[vm]]` tables stays linear).
    func append(_ table: TOMLTable, to key: String) {
        guard case .tableArray(var ts)? = entries.removeValue(forKey: key) else { return }
        ts.append(table)
        entries[key] = .tableArray(ts)
    }

    func set(_ key: String, _ entry: Entry, line: Int) {
        if entries[key] == nil { keys.append(key) }
        entries[key] = entry
        keyLines[key] = keyLines[key] ?? line
    }

    func qualified(_ key: String) -> String { name.isEmpty ? key : "\(name).\(key)" }
}

struct TOMLParser {
    private let s: [Unicode.Scalar]
    private var i = 0
    private var line = 1
    private let file: String

    init(text: String, file: String) {
        s = Array(text.unicodeScalars)
        self.file = file
    }

    static func parse(_ text: String, file: String) throws(ConfigIssue) -> TOMLTable {
        var p = TOMLParser(text: text, file: file)
        return try p.document()
    }

    private func fail(_ message: String, line: Int? = nil) -> ConfigIssue {
        ConfigIssue(file: file, line: line ?? self.line, message: message)
    }

    private var atEnd: Bool { i >= s.count }
    private var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    private mutating func skipSpaces() {
        while let c = peek, c == " " || c == "\t" { i += 1 }
    }

    private mutating func skipComment() {
        if peek == "#" { while let c = peek, c != "\n" { i += 1 } }
    }

    /// After a header or value: spaces, an optional comment, then a newline or the end.
    private mutating func endOfLine(after what: String) throws(ConfigIssue) {
        skipSpaces()
        skipComment()
        if peek == "\r" { i += 1 }
        guard let c = peek else { return }
        guard c == "\n" else { throw fail("unexpected '\(c)' after \(what); expected end of line") }
        i += 1
        line += 1
    }

    private mutating func document() throws(ConfigIssue) -> TOMLTable {
        let root = TOMLTable(name: "", line: 0)
        var current = root
        while true {
            skipSpaces()
            skipComment()
            guard let c = peek else { break }
            if c == "\n" || c == "\r" {
                if c == "\n" { line += 1 }
                i += 1
                continue
            }
            if c == "[" {
                current = try header(root: root)
            } else {
                try keyValue(into: current)
            }
        }
        return root
    }

    private mutating func bareKey() throws(ConfigIssue) -> String {
        var out = ""
        while let c = peek, isKeyScalar(c) {
            out.unicodeScalars.append(c)
            i += 1
        }
        if out.isEmpty {
            if let c = peek, c == "\"" || c == "'" { throw fail("quoted keys are not supported; use a bare key (A-Z a-z 0-9 _ -)") }
            throw fail(peek.map { "unexpected '\($0)'; expected a key" } ?? "unexpected end of file; expected a key")
        }
        return out
    }

    private func isKeyScalar(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "_" || c == "-"
    }

    private mutating func header(root: TOMLTable) throws(ConfigIssue) -> TOMLTable {
        let headerLine = line
        i += 1
        let isArray = peek == "["
        if isArray { i += 1 }
        var path: [String] = []
        repeat {
            skipSpaces()
            path.append(try bareKey())
            skipSpaces()
        } while peek == "." && { i += 1; return true }()
        guard peek == "]" else { throw fail("expected ']' to close the table header") }
        i += 1
        if isArray {
            guard peek == "]" else { throw fail("expected ']]' to close the array-of-tables header") }
            i += 1
        }
        let display = isArray ? "[[\(path.joined(separator: "."))]]" : "[\(path.joined(separator: "."))]"
        try endOfLine(after: "table header \(display)")

        // Walk to the parent: an array of tables resolves to its latest element.
        var parent = root
        for (n, key) in path.dropLast().enumerated() {
            let prefix = path[0...n].joined(separator: ".")
            switch parent[key] {
            case .table(let t)?: parent = t
            case .tableArray(let ts)?: parent = ts[ts.count - 1]
            case .value?: throw fail("\(display): '\(prefix)' is a value, not a table", line: headerLine)
            case nil:
                throw fail("\(display) must come after a [[\(prefix)]] or [\(prefix)] it belongs to", line: headerLine)
            }
        }
        let last = path[path.count - 1]
        let name = path.joined(separator: ".")
        if isArray {
            let t = TOMLTable(name: name, line: headerLine)
            t.explicitlyDefined = true
            switch parent[last] {
            case nil: parent.set(last, .tableArray([t]), line: headerLine)
            case .tableArray?:
                parent.append(t, to: last)
            case .table?: throw fail("[[\(name)]]: '\(name)' is a table here; write [\(name)]", line: headerLine)
            case .value?: throw fail("[[\(name)]]: '\(name)' is already a value", line: headerLine)
            }
            return t
        }
        switch parent[last] {
        case nil:
            let t = TOMLTable(name: name, line: headerLine)
            t.explicitlyDefined = true
            parent.set(last, .table(t), line: headerLine)
            return t
        case .table(let t)?:
            if t.explicitlyDefined {
                throw fail("table [\(name)] is defined twice (first at line \(t.line))", line: headerLine)
            }
            t.explicitlyDefined = true
            t.line = headerLine
            return t
        case .tableArray?: throw fail("[\(name)]: '\(name)' is an array of tables here; write [[\(name)]]", line: headerLine)
        case .value?: throw fail("[\(name)]: '\(name)' is already a value", line: headerLine)
        }
    }

    private mutating func keyValue(into table: TOMLTable) throws(ConfigIssue) {
        let keyLine = line
        let key = try bareKey()
        skipSpaces()
        if peek == "." { throw fail("dotted keys are not supported; put '\(key)' keys under a [\(table.qualified(key))] header") }
        guard peek == "=" else {
            throw fail(peek.map { "expected '=' after key '\(key)', found '\($0)'" } ?? "expected '=' after key '\(key)'")
        }
        i += 1
        skipSpaces()
        let value = try parseValue(key: key)
        if table[key] != nil {
            throw fail("duplicate key '\(table.qualified(key))' (first set at line \(table.lineOf(key)))", line: keyLine)
        }
        table.set(key, .value(value), line: keyLine)
        try endOfLine(after: "the value of '\(key)'")
    }

    private mutating func parseValue(key: String) throws(ConfigIssue) -> TOMLValue {
        let valueLine = line
        guard let c = peek, c != "\n", c != "#" else { throw fail("missing value for '\(key)'") }
        switch c {
        case "\"":
            if i + 2 < s.count, s[i + 1] == "\"", s[i + 2] == "\"" { throw fail("multi-line strings are not supported") }
            return TOMLValue(kind: .string(try basicString()), line: valueLine)
        case "'":
            if i + 2 < s.count, s[i + 1] == "'", s[i + 2] == "'" { throw fail("multi-line strings are not supported") }
            return TOMLValue(kind: .string(try literalString()), line: valueLine)
        case "[":
            return TOMLValue(kind: .stringArray(try stringArray(key: key)), line: valueLine)
        case "{":
            throw fail("inline tables are not supported; use a [table] header")
        default:
            var word = ""
            while let d = peek, !(d == " " || d == "\t" || d == "\n" || d == "\r" || d == "#" || d == ",") {
                word.unicodeScalars.append(d)
                i += 1
            }
            if word == "true" { return TOMLValue(kind: .bool(true), line: valueLine) }
            if word == "false" { return TOMLValue(kind: .bool(false), line: valueLine) }
            if let n = parseInteger(word) { return TOMLValue(kind: .integer(n), line: valueLine) }
            if word.contains(".") || word.lowercased().contains("e") && word.first.map({ $0.isNumber || $0 == "-" || $0 == "+" }) == true {
                if Double(word.replacingOccurrences(of: "_", with: "")) != nil { throw fail("floating-point values are not supported ('\(word)')") }
            }
            throw fail("invalid value '\(word)' for '\(key)' (strings need quotes: \"\(word)\")")
        }
    }

    private func parseInteger(_ word: String) -> Int? {
        guard !word.isEmpty, !word.hasPrefix("_"), !word.hasSuffix("_"), !word.contains("__") else { return nil }
        let body = word.hasPrefix("+") || word.hasPrefix("-") ? word.dropFirst() : Substring(word)
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "_") }), body.first != "_" else { return nil }
        // TOML forbids leading zeros.
        if body.count > 1, body.first == "0" { return nil }
        return Int(word.replacingOccurrences(of: "_", with: ""))
    }

    private mutating func basicString() throws(ConfigIssue) -> String {
        let start = line
        i += 1
        var out = ""
        while true {
            guard let c = peek, c != "\n" else { throw fail("unterminated string (started on line \(start))", line: start) }
            i += 1
            if c == "\"" { return out }
            if c == "\\" {
                guard let e = peek else { throw fail("unterminated string", line: start) }
                i += 1
                switch e {
                case "\"": out += "\""
                case "\\": out += "\\"
                case "n": out += "\n"
                case "t": out += "\t"
                case "r": out += "\r"
                case "u", "U":
                    let n = e == "u" ? 4 : 8
                    guard i + n <= s.count else { throw fail("incomplete \\\(e) escape") }
                    let hex = String(String.UnicodeScalarView(s[i..<(i + n)]))
                    guard let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw fail("invalid escape \\\(e)\(hex)") }
                    out.unicodeScalars.append(scalar)
                    i += n
                default: throw fail("invalid escape '\\\(e)' in string")
                }
            } else {
                out.unicodeScalars.append(c)
            }
        }
    }

    private mutating func literalString() throws(ConfigIssue) -> String {
        let start = line
        i += 1
        var out = ""
        while true {
            guard let c = peek, c != "\n" else { throw fail("unterminated string (started on line \(start))", line: start) }
            i += 1
            if c == "'" { return out }
            out.unicodeScalars.append(c)
        }
    }

    /// Skips spaces, comments and newlines inside an array.
    private mutating func skipArrayFiller() {
        while true {
            skipSpaces()
            skipComment()
            if peek == "\r" { i += 1; continue }
            if peek == "\n" { i += 1; line += 1; continue }
            return
        }
    }

    private mutating func stringArray(key: String) throws(ConfigIssue) -> [String] {
        let start = line
        i += 1
        var out: [String] = []
        while true {
            skipArrayFiller()
            guard let c = peek else { throw fail("unterminated array for '\(key)' (started on line \(start))", line: start) }
            if c == "]" { i += 1; return out }
            switch c {
            case "\"": out.append(try basicString())
            case "'": out.append(try literalString())
            default: throw fail("'\(key)' must be an array of strings; found '\(c)'")
            }
            skipArrayFiller()
            if peek == "," { i += 1; continue }
            if peek == "]" { i += 1; return out }
            guard let c = peek else { throw fail("unterminated array for '\(key)' (started on line \(start))", line: start) }
            throw fail("expected ',' or ']' in array '\(key)', found '\(c)'")
        }
    }
}
