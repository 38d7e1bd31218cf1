import CNetlink
import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// A snapshot of one network interface as rtnetlink reports it.
public struct LinkInfo: Sendable, Equatable, CustomStringConvertible {
    /// The interface index (stable for the life of the device).
    public var index: Int32
    /// The interface name.
    public var name: String
    /// The MTU in bytes.
    public var mtu: UInt32
    /// The link-layer address (6 bytes for Ethernet, TAP and veth).
    public var mac: [UInt8]
    /// Administratively up (`IFF_UP`).
    public var isUp: Bool
    /// Lower layer up (`IFF_LOWER_UP`). For a TAP this means "a process (QEMU) has the queue attached".
    public var hasCarrier: Bool
    /// The rtnetlink link kind (`IFLA_INFO_KIND`) such as `"tun"`, `"veth"`, `"bridge"`; nil for physical devices.
    public var kind: String?
    /// RFC 2863 operational state is `up` (`IF_OPER_UP`). The kernel's link watcher sets it, and activates the
    /// device's qdisc, shortly *after* carrier comes on; until then frames sent through the qdisc are dropped
    /// silently (qdisc bypass is not affected).
    public var isOperUp: Bool
    /// The interface alias (`IFLA_IFALIAS`, `ip link set NAME alias TEXT`); nil when none is set.
    /// tapswitch marks the TAPs it creates with one (`tapswitch:...`).
    public var alias: String?

    public init(index: Int32, name: String, mtu: UInt32, mac: [UInt8], isUp: Bool, hasCarrier: Bool, kind: String?,
                isOperUp: Bool = false, alias: String? = nil) {
        self.index = index
        self.name = name
        self.mtu = mtu
        self.mac = mac
        self.isUp = isUp
        self.hasCarrier = hasCarrier
        self.kind = kind
        self.isOperUp = isOperUp
        self.alias = alias
    }

    public var description: String {
        let macText = mac.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(separator: ":")
        return "\(index): \(name) kind=\(kind ?? "-") mtu=\(mtu) mac=\(macText)\(isUp ? " UP" : "")\(hasCarrier ? " LOWER_UP" : "")\(isOperUp ? " oper-up" : "")"
    }

    /// Copies the fields out of a libnl `struct rtnl_link *` (borrowed; not released here).
    init(rtnlLink link: OpaquePointer) {
        index = rtnl_link_get_ifindex(link)
        name = rtnl_link_get_name(link).map { String(cString: $0) } ?? ""
        mtu = rtnl_link_get_mtu(link)
        if let addr = rtnl_link_get_addr(link), let bytes = nl_addr_get_binary_addr(addr) {
            let count = Int(nl_addr_get_len(addr))
            mac = Array(UnsafeRawBufferPointer(start: bytes, count: count))
        } else {
            mac = []
        }
        let flags = rtnl_link_get_flags(link)
        isUp = flags & UInt32(IFF_UP) != 0
        hasCarrier = flags & TS_IFF_LOWER_UP != 0
        kind = rtnl_link_get_type(link).map { String(cString: $0) }
        isOperUp = rtnl_link_get_operstate(link) == 6  // IF_OPER_UP
        alias = rtnl_link_get_ifalias(link).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }
}
