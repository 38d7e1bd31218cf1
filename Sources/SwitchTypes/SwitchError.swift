/// The one error type of tapswitch: the core, the data plane and the daemon throw it, and the
/// control protocol carries its ``Code`` to the client, so a caller decides by code, never by
/// message text. Every message names the object and the rule that refused the request.
public struct SwitchError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure. The raw values are the wire names (`"code"` in control responses).
    public enum Code: String, Sendable, CaseIterable {
        /// A bad argument (a name, a value out of range, an unknown extension).
        case invalidArgument
        /// An object that does not exist.
        case notFound
        /// A name or id already in use.
        case exists
        /// A lifecycle step out of order, or an operation on an object in the wrong state.
        case invalidState
        /// An extension vetoed the request (``SwitchError/vetoingExtension`` says which).
        case vetoed
        /// A configured limit was reached.
        case limitReached
        /// The operating system refused for lack of privilege (EPERM, EACCES).
        case permissionDenied
        /// The object is in use by someone else (EBUSY, a TAP QEMU holds).
        case busy
        /// Any other failure of the operating system or of the daemon itself.
        case system
    }

    public let code: Code
    public let message: String
    /// For ``Code/vetoed``: the extension that vetoed and its reason.
    public let vetoingExtension: String?
    public let vetoReason: String?
    /// The lower-level error this one wraps (a system error, a netlink error), for logs; the
    /// message already says what it means to the operator.
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, vetoingExtension: String? = nil, vetoReason: String? = nil,
                cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.vetoingExtension = vetoingExtension
        self.vetoReason = vetoReason
        self.cause = cause
    }

    /// An extension refused a request; the message names it and its reason.
    public static func vetoed(extension name: String, reason: String) -> SwitchError {
        SwitchError(.vetoed, "vetoed by extension '\(name)': \(reason)", vetoingExtension: name, vetoReason: reason)
    }

    /// The same error with its message prefixed by what was being done (the code, veto and cause stay).
    public func context(_ prefix: String) -> SwitchError {
        SwitchError(code, "\(prefix): \(message)", vetoingExtension: vetoingExtension, vetoReason: vetoReason, cause: cause)
    }

    public var description: String { message }

    /// Equal when code, message and veto agree; the cause is compared by its description.
    public static func == (a: SwitchError, b: SwitchError) -> Bool {
        a.code == b.code && a.message == b.message && a.vetoingExtension == b.vetoingExtension
            && a.vetoReason == b.vetoReason && a.cause.map { "\($0)" } == b.cause.map { "\($0)" }
    }
}
