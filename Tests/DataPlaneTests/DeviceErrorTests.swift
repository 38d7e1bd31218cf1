@testable import DataPlane
import Glibc
import LinuxNet
import SwitchCore
import Testing

/// Errors from the device layer become SwitchErrors whose code says what happened, so the daemon and
/// the client decide by code (a TAP in use is `busy`, a missing device `notFound`), never by text.
@Suite("Device errors keep their meaning")
struct DeviceErrorTests {
    @Test("errno and libnl codes map to SwitchError codes; the message and cause are kept", arguments: [
        (EEXIST, SwitchError.Code.exists), (ENODEV, .notFound), (ENOENT, .notFound), (EPERM, .permissionDenied),
        (EACCES, .permissionDenied), (EBUSY, .busy), (EINVAL, .invalidArgument), (ENOMEM, .system),
    ])
    func systemErrors(errno: Int32, code: SwitchError.Code) {
        let cause = SystemError(operation: "TUNSETIFF", device: "vm1-0", errno: errno)
        let e = SwitchError("cannot create TAP vm1-0", cause: cause)
        #expect(e.code == code)
        #expect(e.message == "cannot create TAP vm1-0: \(cause)")
        #expect(e.cause as? SystemError == cause)
    }

    @Test("libnl codes map too; a SwitchError cause keeps its code; anything else is system")
    func otherCauses() {
        // libnl's numbers (netlink/errno.h): NLE_EXIST 6, NLE_NODEV 31, NLE_PERM 28, NLE_NOMEM 5.
        #expect(SwitchError("x", cause: NetlinkError(operation: "rtnl_link_add", code: -6)).code == .exists)
        #expect(SwitchError("x", cause: NetlinkError(operation: "rtnl_link_get", code: 31)).code == .notFound)
        #expect(SwitchError("x", cause: NetlinkError(operation: "rtnl_link_change", code: 28)).code == .permissionDenied)
        #expect(SwitchError("x", cause: NetlinkError(operation: "rtnl_link_change", code: 5)).code == .system)
        #expect(SwitchError("x", cause: SwitchError(.limitReached, "full")).code == .limitReached)
        struct Odd: Error {}
        #expect(SwitchError("x", cause: Odd()).code == .system)
    }
}
