// The daemon's error type; lives here (below every daemon module) until the shared vocabulary
// module takes it over.

/// What the backend reports to the operator when an operation fails.
public struct SwitchError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case invalidArgument, notFound, exists, invalidState, vetoed, system
    }

    public var code: Code
    /// One line naming what failed and why, e.g. `vetoed by extension 'duplicate-mac-guard': ...`.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// An extension refused a lifecycle step.
    public static func vetoed(extension name: String, reason: String) -> SwitchError {
        SwitchError(.vetoed, "vetoed by extension '\(name)': \(reason)")
    }

    public var description: String { message }
}
