/// A failed data-plane request, with a message an operator can act on (it names the port or device).
public struct DataPlaneError: Error, CustomStringConvertible, Sendable {
    public let message: String
    /// Set when an extension vetoed the request.
    public let vetoingExtension: String?
    public let vetoReason: String?

    public init(_ message: String, vetoingExtension: String? = nil, vetoReason: String? = nil) {
        self.message = message
        self.vetoingExtension = vetoingExtension
        self.vetoReason = vetoReason
    }

    public var description: String { message }
}
