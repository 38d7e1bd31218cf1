import CNetlink

#if canImport(Glibc)
import Glibc
#endif

/// A kernel VXLAN device as tapswitch creates it for a segment.
public struct VXLANParameters: Sendable, Equatable {
    public var name: InterfaceName
    public var vni: UInt32
    /// This host's VTEP address, IPv4 or IPv6 text.
    public var local: String
    /// The underlay device's interface index (`dev` in `ip link add ... type vxlan`).
    public var underlayIndex: Int32
    public var udpPort: UInt16
    /// Kernel learning of remote MACs (flood-and-learn); off when a control plane fills the FDB.
    public var learning: Bool
    /// Seconds before a learned remote MAC without traffic is forgotten (0: never).
    public var ageing: UInt32
    public var mtu: UInt32

    public init(name: InterfaceName, vni: UInt32, local: String, underlayIndex: Int32, udpPort: UInt16, learning: Bool,
                ageing: UInt32 = 300, mtu: UInt32) {
        self.name = name
        self.vni = vni
        self.local = local
        self.underlayIndex = underlayIndex
        self.udpPort = udpPort
        self.learning = learning
        self.ageing = ageing
        self.mtu = mtu
    }
}

/// What the kernel reports of an existing VXLAN device.
public struct VXLANState: Sendable, Equatable {
    public var vni: UInt32
    public var learning: Bool
}

extension RouteNetlink {
    /// Creates the VXLAN device `p.name` (admin-down), like `ip link add NAME type vxlan id VNI local
    /// ADDR dev UNDERLAY dstport PORT [nolearning]` with MTU `p.mtu`. Fails if any link of that name exists.
    public func createVXLAN(_ p: VXLANParameters) throws {
        try socket.withLock { sock throws(NetlinkError) in
            let local = try Self.address(p.local, device: p.name.value)
            defer { nl_addr_put(local) }
            guard let link = rtnl_link_vxlan_alloc() else { throw NetlinkError(operation: "rtnl_link_vxlan_alloc", code: NLE_NOMEM) }
            defer { rtnl_link_put(link) }
            let dev = p.name.value
            rtnl_link_set_name(link, dev)
            rtnl_link_set_mtu(link, p.mtu)
            try nlCheck("vxlan id", device: dev, rtnl_link_vxlan_set_id(link, p.vni))
            try nlCheck("vxlan local", device: dev, rtnl_link_vxlan_set_local(link, local))
            try nlCheck("vxlan dev", device: dev, rtnl_link_vxlan_set_link(link, UInt32(p.underlayIndex)))
            try nlCheck("vxlan dstport", device: dev, rtnl_link_vxlan_set_port(link, UInt32(p.udpPort)))
            try nlCheck("vxlan learning", device: dev, rtnl_link_vxlan_set_learning(link, p.learning ? 1 : 0))
            try nlCheck("vxlan ageing", device: dev, rtnl_link_vxlan_set_ageing(link, p.ageing))
            try nlCheck("create VXLAN device", device: dev, rtnl_link_add(sock.pointer, link, NLM_F_CREATE | NLM_F_EXCL))
        }
    }

    /// The VXLAN settings of link `name`; nil when there is no such link or it is not a VXLAN device.
    public func vxlanState(named name: String) throws -> VXLANState? {
        try socket.withLock { sock throws(NetlinkError) -> VXLANState? in
            guard let link = try Self.fetch(sock.pointer, index: 0, name: name) else { return nil }
            defer { rtnl_link_put(link) }
            guard rtnl_link_is_vxlan(link) != 0 else { return nil }
            var vni: UInt32 = 0
            try nlCheck("vxlan id", device: name, rtnl_link_vxlan_get_id(link, &vni))
            let learning = rtnl_link_vxlan_get_learning(link)
            return VXLANState(vni: vni, learning: learning > 0)
        }
    }

    /// Adds remote VTEP `remote` to the flood list of VXLAN device `index`: an all-zero FDB entry
    /// (`bridge fdb append 00:00:00:00:00:00 dev NAME dst REMOTE`), so broadcast, unknown unicast and
    /// multicast frames get one unicast copy per VTEP. Adding one that is there already is harmless.
    public func appendFloodEntry(deviceIndex index: Int32, device: String, remote: String) throws {
        try socket.withLock { sock throws(NetlinkError) in
            let dst = try Self.address(remote, device: device)
            defer { nl_addr_put(dst) }
            var zero = [UInt8](repeating: 0, count: 6)
            guard let lladdr = nl_addr_build(AF_LLC, &zero, 6) else { throw NetlinkError(operation: "nl_addr_build", device: device, code: NLE_NOMEM) }
            defer { nl_addr_put(lladdr) }
            guard let neigh = rtnl_neigh_alloc() else { throw NetlinkError(operation: "rtnl_neigh_alloc", code: NLE_NOMEM) }
            defer { rtnl_neigh_put(neigh) }
            rtnl_neigh_set_ifindex(neigh, index)
            // The destination first: libnl takes the neighbour's family from it, then AF_BRIDGE overrides.
            try nlCheck("fdb dst \(remote)", device: device, rtnl_neigh_set_dst(neigh, dst))
            rtnl_neigh_set_lladdr(neigh, lladdr)
            rtnl_neigh_set_family(neigh, AF_BRIDGE)
            rtnl_neigh_set_state(neigh, Int32(NUD_PERMANENT | NUD_NOARP))
            rtnl_neigh_set_flags(neigh, UInt32(NTF_SELF))
            try nlCheck("fdb append 00:00:00:00:00:00 dst \(remote)", device: device,
                        rtnl_neigh_add(sock.pointer, neigh, NLM_F_CREATE | NLM_F_APPEND))
        }
    }

    /// Adds or replaces the neighbour entry `ip lladdr MAC dev DEVICE nud noarp` (`ip neigh replace`):
    /// an IP known to belong to a MAC behind bridge `device`. `ip` is 4 (IPv4) or 16 (IPv6) bytes.
    public func setNeighbour(deviceIndex index: Int32, device: String, ip: [UInt8], mac: [UInt8]) throws {
        try socket.withLock { sock throws(NetlinkError) in
            let neigh = try Self.neighbour(index: index, device: device, ip: ip)
            defer { rtnl_neigh_put(neigh) }
            var bytes = mac
            guard let lladdr = nl_addr_build(AF_LLC, &bytes, bytes.count) else {
                throw NetlinkError(operation: "nl_addr_build", device: device, code: NLE_NOMEM)
            }
            defer { nl_addr_put(lladdr) }
            rtnl_neigh_set_lladdr(neigh, lladdr)
            rtnl_neigh_set_state(neigh, Int32(NUD_NOARP))
            try nlCheck("neigh replace", device: device, rtnl_neigh_add(sock.pointer, neigh, NLM_F_CREATE | NLM_F_REPLACE))
        }
    }

    /// Deletes the neighbour entry for `ip` on `device`; false when there was none.
    @discardableResult
    public func deleteNeighbour(deviceIndex index: Int32, device: String, ip: [UInt8]) throws -> Bool {
        try socket.withLock { sock throws(NetlinkError) -> Bool in
            let neigh = try Self.neighbour(index: index, device: device, ip: ip)
            defer { rtnl_neigh_put(neigh) }
            let rc = rtnl_neigh_delete(sock.pointer, neigh, 0)
            if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NOADDR || rc == -NLE_NODEV { return false }
            try nlCheck("neigh del", device: device, rc)
            return true
        }
    }

    /// The unicast IPv4/IPv6 neighbour entries on interface `index` that someone set by hand (state
    /// NOARP or PERMANENT, not `extern_learn`): an EVPN bridge's local MAC+IP entries, which only
    /// tapswitch writes there. Each address is 4 or 16 bytes.
    public func manualNeighbours(deviceIndex index: Int32) throws -> [[UInt8]] {
        try socket.withLock { sock throws(NetlinkError) -> [[UInt8]] in
            var cache: OpaquePointer?
            try nlCheck("rtnl_neigh_alloc_cache", rtnl_neigh_alloc_cache(sock.pointer, &cache))
            guard let cache else { return [] }
            defer { nl_cache_free(cache) }
            var result: [[UInt8]] = []
            var object = nl_cache_get_first(cache)
            while let neigh = object {
                object = nl_cache_get_next(neigh)
                let family = rtnl_neigh_get_family(neigh)
                guard rtnl_neigh_get_ifindex(neigh) == index, family == AF_INET || family == AF_INET6,
                      rtnl_neigh_get_state(neigh) & Int32(NUD_NOARP | NUD_PERMANENT) != 0,
                      rtnl_neigh_get_flags(neigh) & UInt32(NTF_EXT_LEARNED) == 0,
                      let dst = rtnl_neigh_get_dst(neigh), let raw = nl_addr_get_binary_addr(dst) else { continue }
                let bytes = Array(UnsafeRawBufferPointer(start: raw, count: Int(nl_addr_get_len(dst))))
                // Multicast entries (224/4, ff00::/8) are the kernel's own.
                guard bytes.count == 4 || bytes.count == 16, !(bytes.count == 4 && bytes[0] >> 4 == 0xE), !(bytes.count == 16 && bytes[0] == 0xFF)
                else { continue }
                result.append(bytes)
            }
            return result
        }
    }

    /// A neighbour object for `ip` (4 or 16 bytes) on interface `index`; the caller releases it.
    private static func neighbour(index: Int32, device: String, ip: [UInt8]) throws(NetlinkError) -> OpaquePointer {
        var bytes = ip
        let family = ip.count == 16 ? AF_INET6 : AF_INET
        guard ip.count == 4 || ip.count == 16, let dst = nl_addr_build(family, &bytes, bytes.count) else {
            throw NetlinkError(operation: "nl_addr_build", device: device, code: NLE_INVAL)
        }
        defer { nl_addr_put(dst) }
        guard let neigh = rtnl_neigh_alloc() else { throw NetlinkError(operation: "rtnl_neigh_alloc", code: NLE_NOMEM) }
        rtnl_neigh_set_ifindex(neigh, index)
        do throws(NetlinkError) { try nlCheck("neigh dst", device: device, rtnl_neigh_set_dst(neigh, dst)) } catch {
            rtnl_neigh_put(neigh)
            throw error
        }
        rtnl_neigh_set_family(neigh, family)
        return neigh
    }

    /// An IPv4 or IPv6 host address for libnl; the caller releases it.
    private static func address(_ text: String, device: String) throws(NetlinkError) -> OpaquePointer {
        var addr: OpaquePointer?
        let family = text.contains(":") ? AF_INET6 : AF_INET
        try nlCheck("address '\(text)'", device: device, nl_addr_parse(text, family, &addr))
        guard let addr else { throw NetlinkError(operation: "address '\(text)'", device: device, code: NLE_INVAL) }
        return addr
    }
}

extension RouteNetlink {
    /// Creates the Linux bridge `name` (admin-down) with MTU `mtu`.
    public func createBridge(_ name: InterfaceName, mtu: UInt32) throws {
        try socket.withLock { sock throws(NetlinkError) in
            guard let link = rtnl_link_bridge_alloc() else { throw NetlinkError(operation: "rtnl_link_bridge_alloc", code: NLE_NOMEM) }
            defer { rtnl_link_put(link) }
            rtnl_link_set_name(link, name.value)
            rtnl_link_set_mtu(link, mtu)
            try nlCheck("create bridge", device: name.value, rtnl_link_add(sock.pointer, link, NLM_F_CREATE | NLM_F_EXCL))
        }
    }

    /// Makes `name` a port of the bridge with interface index `master`.
    public func setMaster(_ name: String, masterIndex: Int32) throws {
        try change(name, operation: "set master") { change in rtnl_link_set_master(change, masterIndex) }
    }

    /// Deletes the bridge's FDB entry for `mac` on bridge port `portIndex` (`bridge fdb del MAC dev PORT
    /// master`); false when there was none.
    @discardableResult
    public func deleteBridgeFDBEntry(portIndex: Int32, device: String, mac: [UInt8]) throws -> Bool {
        try socket.withLock { sock throws(NetlinkError) -> Bool in
            var bytes = mac
            guard let lladdr = nl_addr_build(AF_LLC, &bytes, bytes.count) else {
                throw NetlinkError(operation: "nl_addr_build", device: device, code: NLE_NOMEM)
            }
            defer { nl_addr_put(lladdr) }
            guard let neigh = rtnl_neigh_alloc() else { throw NetlinkError(operation: "rtnl_neigh_alloc", code: NLE_NOMEM) }
            defer { rtnl_neigh_put(neigh) }
            rtnl_neigh_set_ifindex(neigh, portIndex)
            rtnl_neigh_set_lladdr(neigh, lladdr)
            rtnl_neigh_set_family(neigh, AF_BRIDGE)
            rtnl_neigh_set_flags(neigh, UInt32(NTF_MASTER))
            let rc = rtnl_neigh_delete(sock.pointer, neigh, 0)
            if rc == -NLE_OBJ_NOTFOUND || rc == -NLE_NOADDR || rc == -NLE_NODEV { return false }
            try nlCheck("fdb del", device: device, rc)
            return true
        }
    }
}
