import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// What a failed system or netlink call means to the layer above, whatever errno or libnl code
/// carried it, so that layer can give its own error the right code without reading numbers or text.
public enum DeviceFailure: Sendable, Equatable {
    /// The name or object is already in use (EEXIST, NLE_EXIST).
    case exists
    /// No such device or object (ENODEV, ENOENT, ENXIO, NLE_OBJ_NOTFOUND, NLE_NODEV).
    case notFound
    /// Not allowed (EPERM, EACCES, NLE_PERM, NLE_NOACCESS).
    case permissionDenied
    /// In use by someone else (EBUSY, NLE_BUSY): e.g. a TAP QEMU holds.
    case busy
    /// The kernel refused the value (EINVAL, ERANGE, NLE_INVAL, NLE_RANGE).
    case invalidArgument
    /// Anything else.
    case other
}

/// A LinuxNet error that says what it means (``DeviceFailure``).
public protocol DeviceError: Error {
    var failure: DeviceFailure { get }
}

extension SystemError: DeviceError {
    public var failure: DeviceFailure {
        switch errno {
        case EEXIST: .exists
        case ENODEV, ENOENT, ENXIO: .notFound
        case EPERM, EACCES: .permissionDenied
        case EBUSY: .busy
        case EINVAL, ERANGE: .invalidArgument
        default: .other
        }
    }
}

extension NetlinkError: DeviceError {
    public var failure: DeviceFailure {
        // `code` is stored positive, as libnl's NLE_* constants are.
        switch code {
        case NLE_EXIST: .exists
        case NLE_OBJ_NOTFOUND, NLE_NODEV: .notFound
        case NLE_NOACCESS, NLE_PERM: .permissionDenied
        case NLE_BUSY: .busy
        case NLE_INVAL, NLE_RANGE: .invalidArgument
        default: .other
        }
    }
}
