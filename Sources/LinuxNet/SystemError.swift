#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: what was attempted, on which device, and the errno.
///
/// The description reads like `TUNSETIFF on 'vm1-0': Device or resource busy (EBUSY)`.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The operation that failed, usually the syscall or ioctl name (`TUNSETIFF`, `bind`).
    public var operation: String
    /// The interface (or path) the operation was about, if any.
    public var device: String?
    /// The `errno` value reported by the kernel.
    public var errno: Int32
    /// Extra context added by the caller (for example why EEXIST matters here).
    public var detail: String?

    public init(operation: String, device: String? = nil, errno: Int32, detail: String? = nil) {
        self.operation = operation
        self.device = device
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text = operation
        if let device { text += " on '\(device)'" }
        text += ": \(Self.describe(errno: errno))"
        if let detail { text += ": \(detail)" }
        return text
    }

    /// `strerror` text plus the symbolic name, e.g. `Device or resource busy (EBUSY)`.
    public static func describe(errno code: Int32) -> String {
        let text = String(cString: strerror(code))
        if let name = errnoName(code) { return "\(text) (\(name))" }
        return "\(text) (errno \(code))"
    }

    /// The symbolic name of the errno values this layer meets; nil for the rest.
    public static func errnoName(_ code: Int32) -> String? {
        switch code {
        case EPERM: "EPERM"
        case ENOENT: "ENOENT"
        case EINTR: "EINTR"
        case EIO: "EIO"
        case ENXIO: "ENXIO"
        case EBADF: "EBADF"
        case EAGAIN: "EAGAIN"
        case ENOMEM: "ENOMEM"
        case EACCES: "EACCES"
        case EFAULT: "EFAULT"
        case EBUSY: "EBUSY"
        case EEXIST: "EEXIST"
        case ENODEV: "ENODEV"
        case EINVAL: "EINVAL"
        case ENFILE: "ENFILE"
        case EMFILE: "EMFILE"
        case ENOTTY: "ENOTTY"
        case ENOSPC: "ENOSPC"
        case EPIPE: "EPIPE"
        case ERANGE: "ERANGE"
        case ENOTSOCK: "ENOTSOCK"
        case EMSGSIZE: "EMSGSIZE"
        case EPROTONOSUPPORT: "EPROTONOSUPPORT"
        case EOPNOTSUPP: "EOPNOTSUPP"
        case EAFNOSUPPORT: "EAFNOSUPPORT"
        case EADDRINUSE: "EADDRINUSE"
        case EADDRNOTAVAIL: "EADDRNOTAVAIL"
        case ENETDOWN: "ENETDOWN"
        case ENETUNREACH: "ENETUNREACH"
        case ENOBUFS: "ENOBUFS"
        case ETIMEDOUT: "ETIMEDOUT"
        case ECONNREFUSED: "ECONNREFUSED"
        default: nil
        }
    }
}

/// The one funnel for blocking-style system calls that report failure as -1 plus errno.
///
/// Retries `EINTR`; any other failure becomes a ``SystemError`` naming `operation` and `device`.
@inline(__always)
@discardableResult
func systemCall<T: BinaryInteger>(
    _ operation: @autoclosure () -> String, device: @autoclosure () -> String? = nil,
    _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw SystemError(operation: operation(), device: device(), errno: code)
    }
}

/// Like ``systemCall(_:device:_:)`` but for the hot path: no throwing, returns the result or `-errno`.
@inline(__always)
func syscallNoThrow<T: SignedInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        return -T(code)
    }
}
