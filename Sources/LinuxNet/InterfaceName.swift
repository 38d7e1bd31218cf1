/// A validated Linux interface name.
///
/// Rules: non-empty, at most 15 bytes (`IFNAMSIZ - 1`), not `.` or `..`, not starting with `-` (`ip`,
/// QEMU and scripts would take it for an option), and only ASCII letters, digits, `_`, `.` and `-`. The kernel itself accepts more (anything but `/`, `:` and whitespace), but names that
/// travel through shell scripts, QEMU command lines and sysfs paths are safer in this subset.
public struct InterfaceName: Sendable, Hashable, CustomStringConvertible {
    /// The longest name the kernel accepts (`IFNAMSIZ` is 16 including the NUL).
    public static let maxLength = 15

    /// The name as given.
    public let value: String

    /// Validates `s`.
    /// - Throws: ``InterfaceNameError`` naming the input and the rule it breaks.
    public init(_ s: String) throws(InterfaceNameError) {
        if s.isEmpty { throw InterfaceNameError(name: s, reason: "is empty") }
        let bytes = s.utf8.count
        if bytes > Self.maxLength {
            throw InterfaceNameError(name: s, reason: "is \(bytes) bytes long (at most \(Self.maxLength) allowed)")
        }
        if s == "." || s == ".." { throw InterfaceNameError(name: s, reason: "is reserved ('.' and '..' are not allowed)") }
        if s.hasPrefix("-") { throw InterfaceNameError(name: s, reason: "starts with '-' (tools would read it as an option)") }
        for scalar in s.unicodeScalars {
            let ok = scalar.isASCII
                && ((scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z") || (scalar >= "0" && scalar <= "9")
                    || scalar == "_" || scalar == "." || scalar == "-")
            if !ok {
                let shown: String
                switch scalar {
                case " ": shown = "a space"
                case "\t": shown = "a tab"
                case "\n": shown = "a newline"
                default: shown = scalar.properties.isWhitespace || scalar.value < 0x20 ? "U+\(String(scalar.value, radix: 16, uppercase: true))" : "'\(scalar)'"
                }
                throw InterfaceNameError(name: s, reason: "contains \(shown) (allowed: letters, digits, '_', '.', '-')")
            }
        }
        value = s
    }

    public var description: String { value }
}

/// Why a string is not a valid ``InterfaceName``.
public struct InterfaceNameError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The rejected input.
    public var name: String
    /// The rule it breaks, phrased to follow the name.
    public var reason: String

    public var description: String { "interface name \"\(name)\" \(reason)" }
}
