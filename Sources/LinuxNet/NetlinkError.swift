import CNetlink

/// A failed libnl call: the operation, the libnl `NLE_*` code and libnl's own text for it.
///
/// libnl returns negative `NLE_*` codes, not errno, so this is kept apart from ``SystemError``.
public struct NetlinkError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was attempted, e.g. `rtnl_link_change` or `set mtu`.
    public var operation: String
    /// The interface the request was about, if any.
    public var device: String?
    /// The positive libnl error code (`NLE_EXIST`, `NLE_OBJ_NOTFOUND`, ...).
    public var code: Int32
    /// `nl_geterror(code)`.
    public var message: String

    public init(operation: String, device: String? = nil, code: Int32) {
        self.operation = operation
        self.device = device
        self.code = abs(code)
        self.message = String(cString: nl_geterror(abs(code)))
    }

    public var description: String {
        var text = operation
        if let device { text += " on '\(device)'" }
        return text + ": \(message) (NLE \(code))"
    }
}

/// Turns a negative libnl return value into a ``NetlinkError``.
@inline(__always)
@discardableResult
func nlCheck(_ operation: @autoclosure () -> String, device: @autoclosure () -> String? = nil, _ result: Int32)
    throws(NetlinkError) -> Int32
{
    if result < 0 { throw NetlinkError(operation: operation(), device: device(), code: result) }
    return result
}
