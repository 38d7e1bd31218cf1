/// A network namespace made with `ip netns add`, deleted by ``delete()`` or `deinit`.
///
/// ```swift
/// let ns = try Netns(name: UniqueNames.run.name("ns"))
/// defer { ns.delete() }
/// let out = try ns.run(["ip", "-o", "link"])
/// ```
public final class Netns: Sendable {
    /// The namespace name (also its file under /run/netns).
    public let name: String
    /// `/run/netns/NAME`, for ``LinuxNet/RouteNetlink/moveLink(_:toNetnsAt:)``.
    public var path: String { "/run/netns/\(name)" }

    /// Creates the namespace (`ip netns add NAME`) and brings its loopback up.
    public init(name: String) throws {
        self.name = name
        try Shell.check(["ip", "netns", "add", name])
        do {
            try Shell.check(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        } catch {
            _ = try? Shell.run(["ip", "netns", "delete", name])
            throw error
        }
    }

    deinit { delete() }

    /// Runs `args` inside the namespace (`ip netns exec NAME ...`) with a time limit.
    @discardableResult
    public func run(_ args: [String], timeout: Duration = .seconds(10)) throws -> (status: Int32, stdout: String, stderr: String) {
        try Shell.run(["ip", "netns", "exec", name] + args, timeout: timeout)
    }

    /// Like ``run(_:timeout:)`` but throws unless the command exits 0; returns stdout.
    @discardableResult
    public func check(_ args: [String], timeout: Duration = .seconds(10)) throws -> String {
        try Shell.check(["ip", "netns", "exec", name] + args, timeout: timeout)
    }

    /// Deletes the namespace (`ip netns delete`); idempotent. Devices inside it are destroyed
    /// (a veth end in it takes its peer down with it).
    public func delete() {
        _ = try? Shell.run(["ip", "netns", "delete", name])
    }
}
