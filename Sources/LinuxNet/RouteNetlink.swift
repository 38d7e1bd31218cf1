import CNetlink

#if canImport(Glibc)
import Glibc
import Locking
#endif

/// Synchronous rtnetlink requests through libnl-route (`rtnl_link_*`).
///
/// ## Concurrency model
/// One libnl socket, which is not thread-safe, guarded by a `Mutex`: every request holds the lock for the
/// whole request/ack exchange, so calls from any thread or task are serialised. Requests block the caller
/// for a netlink round trip (tens of microseconds); call it from the control plane, never per frame.
public final class RouteNetlink: Sendable {
    struct Socket: ~Copyable {
        let pointer: OpaquePointer
        deinit {
            nl_close(pointer)
            nl_socket_free(pointer)
        }
    }

    let socket: Locked<Socket>

    /// Opens and connects a `NETLINK_ROUTE` socket.
    public init() throws {
        guard let sock = nl_socket_alloc() else {
            throw NetlinkError(operation: "nl_socket_alloc", code: NLE_NOMEM)
        }
        let rc = nl_connect(sock, NETLINK_ROUTE)
        if rc < 0 {
            nl_socket_free(sock)
            throw NetlinkError(operation: "nl_connect(NETLINK_ROUTE)", code: rc)
        }
        socket = Locked(Socket(pointer: sock))
    }

    // MARK: Queries

    /// The link called `name`, or nil if there is none.
    public func link(named name: String) throws -> LinkInfo? {
        try socket.withLock { sock throws(NetlinkError) -> LinkInfo? in
            guard let link = try Self.fetch(sock.pointer, index: 0, name: name) else { return nil }
            defer { rtnl_link_put(link) }
            return LinkInfo(rtnlLink: link)
        }
    }

    /// The link with interface index `index`, or nil if there is none.
    public func link(index: Int32) throws -> LinkInfo? {
        try socket.withLock { sock throws(NetlinkError) -> LinkInfo? in
            guard let link = try Self.fetch(sock.pointer, index: index, name: nil) else { return nil }
            defer { rtnl_link_put(link) }
            return LinkInfo(rtnlLink: link)
        }
    }

    /// Every link in the current network namespace (one `RTM_GETLINK` dump).
    public func links() throws -> [LinkInfo] {
        try socket.withLock { sock throws(NetlinkError) -> [LinkInfo] in
            var cache: OpaquePointer?
            try nlCheck("rtnl_link_alloc_cache", rtnl_link_alloc_cache(sock.pointer, AF_UNSPEC, &cache))
            guard let cache else { return [] }
            defer { nl_cache_free(cache) }
            var result: [LinkInfo] = []
            result.reserveCapacity(Int(nl_cache_nitems(cache)))
            var object = nl_cache_get_first(cache)
            while let current = object {
                result.append(LinkInfo(rtnlLink: current))
                object = nl_cache_get_next(current)
            }
            return result
        }
    }

    // MARK: Changes

    /// Changes the MAC address, MTU and/or administrative state of `name`; nil leaves a field alone.
    public func setLink(_ name: String, mac: [UInt8]? = nil, mtu: UInt32? = nil, up: Bool? = nil) throws {
        try change(name, operation: "set link") { change in
            if let mac {
                let addr = mac.withUnsafeBytes { nl_addr_build(AF_LLC, $0.baseAddress, $0.count) }
                guard let addr else { throw NetlinkError(operation: "nl_addr_build", device: name, code: NLE_NOMEM) }
                rtnl_link_set_addr(change, addr)
                nl_addr_put(addr)
            }
            if let mtu { rtnl_link_set_mtu(change, mtu) }
            switch up {
            case true?: rtnl_link_set_flags(change, UInt32(IFF_UP))
            case false?: rtnl_link_unset_flags(change, UInt32(IFF_UP))
            case nil: break
            }
        }
    }

    /// Sets the interface alias of `name` (`IFLA_IFALIAS`, at most 255 bytes; "" removes it).
    public func setAlias(_ name: String, _ alias: String) throws {
        try change(name, operation: "set alias") { change in rtnl_link_set_ifalias(change, alias) }
    }

    /// Deletes the link `name` (for a TAP this works even while QEMU holds it open).
    public func deleteLink(_ name: String) throws {
        try socket.withLock { sock throws(NetlinkError) in
            guard let link = rtnl_link_alloc() else { throw NetlinkError(operation: "rtnl_link_alloc", code: NLE_NOMEM) }
            defer { rtnl_link_put(link) }
            rtnl_link_set_name(link, name)
            try nlCheck("rtnl_link_delete", device: name, rtnl_link_delete(sock.pointer, link))
        }
    }

    /// Moves `name` into the network namespace whose file is at `path` (e.g. `/run/netns/NAME`).
    public func moveLink(_ name: String, toNetnsAt path: String) throws {
        let fd = try systemCall("open", device: path) { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        try change(name, operation: "move link to \(path)") { change in
            rtnl_link_set_ns_fd(change, fd)
        }
    }

    /// Creates a veth pair `a` <-> `b` in the current namespace (both admin-down).
    public func createVethPair(_ a: String, _ b: String) throws {
        try socket.withLock { sock throws(NetlinkError) in
            _ = try nlCheck("rtnl_link_veth_add", device: a, rtnl_link_veth_add(sock.pointer, a, b, getpid()))
        }
    }

    /// Keeps the host's own IP stack off a VM's TAP: IPv6 address generation mode `none` (no link-local
    /// address, no router solicitations, no DAD) and `disable_ipv6 = 1`. The TAP carries no addresses.
    public func disableHostStack(_ name: String) throws {
        // IN6_ADDR_GEN_MODE_NONE from <linux/if_link.h>; set first so nothing is generated even briefly.
        let addrGenModeNone: UInt8 = 1
        try change(name, operation: "set IPv6 addr_gen_mode none") { change in
            try nlCheck("rtnl_link_inet6_set_addr_gen_mode", device: name,
                        rtnl_link_inet6_set_addr_gen_mode(change, addrGenModeNone))
        }
        let path = "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6"
        // Without IPv6 in the kernel the directory is absent and there is nothing to disable.
        if access("/proc/sys/net/ipv6/conf", F_OK) != 0 { return }
        try writeSysctl(path, value: "1", device: name)
    }

    /// Turns IPv6 back on for `name` while it keeps no address (`addr_gen_mode none` stays): an EVPN
    /// segment's bridge holds the VMs' IPv6 neighbour entries, which need IPv6 on the device, and
    /// without an address it sends nothing of its own.
    public func enableIPv6WithoutAddresses(_ name: String) throws {
        let path = "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6"
        if access("/proc/sys/net/ipv6/conf", F_OK) != 0 { return }
        try writeSysctl(path, value: "0", device: name)
    }

    /// ARP/ND suppression on bridge port `name` (`bridge link set dev NAME neigh_suppress on`): the
    /// bridge answers ARP requests and neighbour solicitations for addresses it holds neighbour entries
    /// for, and floods none of them to this port.
    public func setNeighbourSuppression(_ name: String, on: Bool) throws {
        try writeSysctl("/sys/class/net/\(name)/brport/neigh_suppress", value: on ? "1" : "0", device: name)
    }

    // MARK: Helpers

    /// Runs `body` on a fresh change object and applies it to the current state of `name`.
    func change(
        _ name: String, operation: String, _ body: (OpaquePointer) throws -> Void
    ) throws {
        try socket.withLock { sock in
            guard let original = try Self.fetch(sock.pointer, index: 0, name: name) else {
                throw NetlinkError(operation: operation, device: name, code: NLE_OBJ_NOTFOUND)
            }
            defer { rtnl_link_put(original) }
            guard let change = rtnl_link_alloc() else { throw NetlinkError(operation: "rtnl_link_alloc", code: NLE_NOMEM) }
            defer { rtnl_link_put(change) }
            try body(change)
            try nlCheck(operation, device: name, rtnl_link_change(sock.pointer, original, change, 0))
        }
    }

    /// `rtnl_link_get_kernel`, mapping "no such device" to nil. The caller releases the result.
    static func fetch(_ sock: OpaquePointer, index: Int32, name: String?) throws(NetlinkError) -> OpaquePointer? {
        var link: OpaquePointer?
        let rc = rtnl_link_get_kernel(sock, index, name, &link)
        if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NODEV { return nil }
        try nlCheck("rtnl_link_get_kernel", device: name ?? "#\(index)", rc)
        return link
    }
}

/// Writes `value` to a sysctl file under /proc/sys.
func writeSysctl(_ path: String, value: String, device: String?) throws(SystemError) {
    let fd = try systemCall("open \(path)", device: device) { open(path, O_WRONLY | O_CLOEXEC) }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    let written = try systemCall("write \(path)", device: device) { bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
    if written != bytes.count { throw SystemError(operation: "write \(path)", device: device, errno: EIO, detail: "short write") }
}
