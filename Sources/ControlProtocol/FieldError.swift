/// A rejected value, naming where it came from.
///
/// `field` is whatever the operator typed or sent: a CLI flag (`--mtu`), a JSON path
/// (`vm.nics[0].mtu`) or a config key. `description` is the one line shown to the operator.
public struct FieldError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The flag, JSON path or key that holds the bad value.
    public var field: String
    /// What is wrong with it, e.g. `'9000x' is not an integer`.
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field.isEmpty ? message : "\(field): \(message)" }

    /// The same problem reported under another name (e.g. a JSON path re-rooted under a CLI flag).
    public func renamed(_ newField: String) -> FieldError {
        FieldError(field: newField, message: message)
    }
}
