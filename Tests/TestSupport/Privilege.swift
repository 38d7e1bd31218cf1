import Foundation
import LinuxNet
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Gate for tests that need `CAP_NET_ADMIN`/`CAP_NET_RAW` and `/dev/net/tun`.
///
/// The probe runs once per process: it creates a throw-away (non-persistent) TAP through `/dev/net/tun`,
/// which needs `CAP_NET_ADMIN`, closes it (the kernel deletes it), and opens an `AF_PACKET` socket
/// (`CAP_NET_RAW`). When the privilege is missing the test is skipped with the reason, except under
/// `CI=true`, where missing privilege is a failure: CI must run these suites for real.
///
/// Idiom (both parts: the trait skips cleanly outside CI, the call fails loudly inside CI):
/// ```swift
/// @Suite(.serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
/// struct TapTests {
///     @Test func createsTap() throws {
///         try Privilege.requireNetAdmin()
///         ...
///     }
/// }
/// ```
/// `.enabled(if:)` is evaluated before the test starts; `requireNetAdmin()` can also be used alone: it
/// cancels (skips) the running test via `Test.cancel` when allowed, or throws under CI.
public enum Privilege {
    /// Why the probe failed, or nil if the privileges are there. Computed once.
    public static let missingReason: String? = probe()

    /// True when the probe succeeded.
    public static var hasNetAdmin: Bool { missingReason == nil }

    /// True when env `CI` is `true` (privileged suites must then run and fail instead of skipping).
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"]?.lowercased() == "true" }

    /// Condition for `.enabled(if:)`: run when privileged, and under CI always (so the test fails there).
    public static var shouldRun: Bool { hasNetAdmin || isCI }

    /// The skip reason for `.enabled(if:_:)`.
    public static var comment: Comment {
        Comment(rawValue: "needs CAP_NET_ADMIN, CAP_NET_RAW and /dev/net/tun: \(missingReason ?? "available")")
    }

    /// Returns if privileged; otherwise skips the current test (``Test/cancel(_:sourceLocation:)``) or, under
    /// `CI=true`, throws ``PrivilegeError``.
    public static func requireNetAdmin(sourceLocation: SourceLocation = #_sourceLocation) throws {
        guard let reason = missingReason else { return }
        if isCI { throw PrivilegeError(reason: reason) }
        try Test.cancel("skipped: needs CAP_NET_ADMIN, CAP_NET_RAW and /dev/net/tun: \(reason)", sourceLocation: sourceLocation)
    }

    private static func probe() -> String? {
        let name = String(format: "tprobe%x", getpid() & 0xffffff)
        guard let interfaceName = try? InterfaceName(name) else { return "cannot build a probe interface name" }
        do {
            // Non-persistent: closing the fd deletes the device again.
            let fd = try TapDevice.attach(name: interfaceName, vnetHeader: false, nonBlocking: true, createIfMissing: true)
            close(fd)
        } catch {
            return "creating a TAP failed: \(error)"
        }
        let packet = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if packet < 0 { return "socket(AF_PACKET) failed: \(SystemError.describe(errno: errno))" }
        close(packet)
        return nil
    }
}

/// Thrown by ``Privilege/requireNetAdmin(sourceLocation:)`` under `CI=true` when privileges are missing.
public struct PrivilegeError: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "CI=true but the privileged test cannot run: \(reason)" }
}
