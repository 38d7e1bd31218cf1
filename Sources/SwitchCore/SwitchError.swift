/// Errors of the switch core. Every message names the object and the rule that refused the request.
public struct SwitchError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// A lifecycle step out of order, or an operation on an object in the wrong state.
        case invalidState
        /// An object that does not exist.
        case notFound
        /// A name or id already in use.
        case exists
        /// A bad argument.
        case invalidArgument
        /// An extension vetoed the request.
        case vetoed
        /// A configured limit was reached.
        case limitReached
    }

    public let code: Code
    public let message: String
    /// For ``Code/vetoed``: the extension that vetoed and its reason.
    public let vetoingExtension: String?
    public let vetoReason: String?

    public init(_ code: Code, _ message: String, vetoingExtension: String? = nil, vetoReason: String? = nil) {
        self.code = code
        self.message = message
        self.vetoingExtension = vetoingExtension
        self.vetoReason = vetoReason
    }

    public var description: String { message }
}
