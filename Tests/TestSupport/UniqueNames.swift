#if canImport(Glibc)
import Glibc
#endif

/// Interface and namespace names unique to one test run: `t` + 4 random hex digits + a role.
///
/// Names stay within 15 bytes (IFNAMSIZ - 1), so roles may be at most 10 characters. Use the shared
/// ``run`` instance so everything a run creates shares one prefix (easy to find and clean up), and give
/// each device a distinct role.
public struct UniqueNames: Sendable {
    /// The prefix shared by this run's names, e.g. `t3fa9`.
    public let prefix: String

    /// A prefix shared by the whole test process.
    public static let run = UniqueNames()

    /// A fresh random prefix.
    public init() {
        let value = UInt16.random(in: 0...UInt16.max)
        let hex = String(value, radix: 16)
        prefix = "t" + String(repeating: "0", count: 4 - hex.count) + hex
    }

    /// `prefix + role`, e.g. `t3fa9tap0`.
    public func name(_ role: String) -> String {
        let name = prefix + role
        precondition(name.utf8.count <= 15, "interface name '\(name)' is longer than 15 bytes; shorten the role '\(role)'")
        return name
    }
}
