/// The security port property: every per-port policy other than the VLAN (Hyper-V's
/// NDIS_SWITCH_PORT_PROPERTY_SECURITY, plus the guards and isolation Hyper-V keeps built in).
///
/// The switch stores it and passes it down the stack; the policy extensions in `SwitchExtensions`
/// enforce it (each reads its own fields). An optional guard (`nil`) takes the enforcing
/// extension's default for the port type: the MAC spoofing guard is on for VM ports
/// (synthetic/emulated) and off otherwise; the other guards are off.
public struct SecurityPolicy: Sendable, Equatable {
    /// Drop frames whose source MAC is not the NIC's MAC or in ``allowedMACs``.
    public var macSpoofGuard: Bool?
    /// Extra source MACs the port may use (at most ``maxAllowedMACs``).
    public var allowedMACs: [MACAddress]
    /// Drop IPv4/IPv6 packets, ARP and neighbour advertisements whose source address is not allowed.
    public var ipGuard: Bool?
    /// Addresses (prefixes) the port may use as source (at most ``maxAllowedIPs``).
    public var allowedIPs: [IPPrefix]
    /// Add the IPv4 address a DHCP server acknowledges to the port's allowed addresses (for the lease).
    public var dhcpSnooping: Bool?
    /// Drop DHCP server messages (DHCPv4 OFFER/ACK/NAK, DHCPv6 ADVERTISE/REPLY/RECONFIGURE) from the port.
    public var dhcpGuard: Bool?
    /// Drop ICMPv6 router advertisements and redirects (and ICMPv4 redirects) from the port.
    public var routerGuard: Bool?
    /// Private VLAN class of the port within its VLAN; nil: an ordinary port.
    public var pvlan: PVLANMode?
    /// Most MAC addresses the port may use; nil: only the switch-wide per-port limit.
    public var macLimit: Int?

    public static let maxAllowedMACs = 16
    public static let maxAllowedIPs = 16
    public static let macLimitRange = 1...65_535

    public init(macSpoofGuard: Bool? = nil, allowedMACs: [MACAddress] = [], ipGuard: Bool? = nil, allowedIPs: [IPPrefix] = [],
                dhcpSnooping: Bool? = nil, dhcpGuard: Bool? = nil, routerGuard: Bool? = nil, pvlan: PVLANMode? = nil,
                macLimit: Int? = nil) {
        self.macSpoofGuard = macSpoofGuard
        self.allowedMACs = allowedMACs
        self.ipGuard = ipGuard
        self.allowedIPs = allowedIPs
        self.dhcpSnooping = dhcpSnooping
        self.dhcpGuard = dhcpGuard
        self.routerGuard = routerGuard
        self.pvlan = pvlan
        self.macLimit = macLimit
    }

    /// True when nothing is set (every field at its default).
    public var isDefault: Bool { self == SecurityPolicy() }

    /// Why the policy cannot be applied, or nil.
    public var problem: String? {
        if allowedMACs.count > Self.maxAllowedMACs { return "\(allowedMACs.count) allowed MACs (at most \(Self.maxAllowedMACs))" }
        if let m = allowedMACs.first(where: { $0.isMulticast || $0.isZero }) { return "allowed MAC \(m) is not a unicast address" }
        if allowedIPs.count > Self.maxAllowedIPs { return "\(allowedIPs.count) allowed IP prefixes (at most \(Self.maxAllowedIPs))" }
        if let l = macLimit, !Self.macLimitRange.contains(l) { return "MAC limit \(l) out of range \(Self.macLimitRange)" }
        if case .community(let c)? = pvlan, !(1...4094).contains(c) { return "community \(c) out of range 1...4094" }
        return nil
    }
}

/// Private VLAN class of a port (Hyper-V's NDIS_SWITCH_PORT_PVLAN_MODE, within the port's VLAN,
/// which acts as the primary VLAN). An isolated port talks only to promiscuous ports and the
/// uplink; a community port also to its own community. Ordinary ports talk to each other and to
/// promiscuous ports.
public enum PVLANMode: Sendable, Hashable {
    case isolated
    case community(UInt16)
    case promiscuous
}

/// An IPv4 or IPv6 address with a prefix length (a single address has the full length).
public struct IPPrefix: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable { case ipv4, ipv6 }
    public let family: Family
    /// The address, IPv4 in the low 32 bits of `low` (`high` 0), IPv6 as two big-endian halves.
    public let high: UInt64
    public let low: UInt64
    public let length: UInt8

    public init(ipv4 address: UInt32, length: UInt8 = 32) {
        precondition(length <= 32)
        family = .ipv4
        high = 0
        self.length = length
        let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(length))
        low = UInt64(address & mask)
    }

    public init(ipv6 high: UInt64, _ low: UInt64, length: UInt8 = 128) {
        precondition(length <= 128)
        family = .ipv6
        self.length = length
        let (mh, ml) = Self.mask6(length)
        self.high = high & mh
        self.low = low & ml
    }

    /// The two 64-bit halves of an IPv6 prefix mask.
    @inlinable public static func mask6(_ length: UInt8) -> (UInt64, UInt64) {
        let l = Int(length)
        let hi: UInt64 = l == 0 ? 0 : l >= 64 ? ~0 : ~UInt64(0) << UInt64(64 - l)
        let lo: UInt64 = l <= 64 ? 0 : l >= 128 ? ~0 : ~UInt64(0) << UInt64(128 - l)
        return (hi, lo)
    }

    public var ipv4Mask: UInt32 { length == 0 ? 0 : ~UInt32(0) << (32 - UInt32(length)) }

    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address (`::` compression allowed) or `v6/n`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let addr = String(parts[0])
        var len: UInt8? = nil
        if parts.count == 2 {
            guard let l = UInt8(parts[1]), String(l) == parts[1] else { return nil }
            len = l
        }
        if let v4 = Self.parseIPv4(addr) {
            guard (len ?? 32) <= 32 else { return nil }
            self.init(ipv4: v4, length: len ?? 32)
        } else if let (h, l) = Self.parseIPv6(addr) {
            guard (len ?? 128) <= 128 else { return nil }
            self.init(ipv6: h, l, length: len ?? 128)
        } else {
            return nil
        }
    }

    public static func parseIPv4(_ s: String) -> UInt32? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), let b = UInt8(p), String(b) == p else { return nil }
            v = v << 8 | UInt32(b)
        }
        return v
    }

    public static func parseIPv6(_ s: String) -> (UInt64, UInt64)? {
        guard s.contains(":"), s.count <= 45 else { return nil }
        let halves = s.components(separatedByDoubleColon: ())
        guard halves.count <= 2 else { return nil }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            for (k, f) in fields.enumerated() {
                if k == fields.count - 1, f.contains("."), let v4 = parseIPv4(String(f)) {
                    out += [UInt16(v4 >> 16), UInt16(v4 & 0xFFFF)]
                    continue
                }
                guard !f.isEmpty, f.count <= 4, let g = UInt16(f, radix: 16) else { return nil }
                out.append(g)
            }
            return out
        }
        var all: [UInt16]
        if halves.count == 2 {
            guard let a = groups(halves[0]), let b = groups(halves[1]), a.count + b.count <= 7 else { return nil }
            all = a + Array(repeating: 0, count: 8 - a.count - b.count) + b
        } else {
            guard let a = groups(halves[0]), a.count == 8 else { return nil }
            all = a
        }
        var h: UInt64 = 0, l: UInt64 = 0
        for k in 0..<4 { h = h << 16 | UInt64(all[k]) }
        for k in 4..<8 { l = l << 16 | UInt64(all[k]) }
        return (h, l)
    }

    public var description: String {
        switch family {
        case .ipv4:
            let a = UInt32(truncatingIfNeeded: low)
            let text = "\(a >> 24).\((a >> 16) & 0xFF).\((a >> 8) & 0xFF).\(a & 0xFF)"
            return length == 32 ? text : text + "/\(length)"
        case .ipv6:
            let text = Self.formatIPv6(high, low)
            return length == 128 ? text : text + "/\(length)"
        }
    }

    /// RFC 5952 text: lower case, the longest run of two or more zero groups as `::`.
    public static func formatIPv6(_ high: UInt64, _ low: UInt64) -> String {
        var g: [UInt16] = []
        for k in 0..<4 { g.append(UInt16(truncatingIfNeeded: high >> UInt64(48 - 16 * k))) }
        for k in 0..<4 { g.append(UInt16(truncatingIfNeeded: low >> UInt64(48 - 16 * k))) }
        var bestStart = -1, bestLen = 0, k = 0
        while k < 8 {
            if g[k] == 0 {
                var e = k
                while e < 8 && g[e] == 0 { e += 1 }
                if e - k > bestLen && e - k >= 2 { bestStart = k; bestLen = e - k }
                k = e
            } else {
                k += 1
            }
        }
        func hex(_ r: Range<Int>) -> String { g[r].map { String($0, radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
}

extension String {
    /// Splits at `::` (at most the first occurrence matters; a second one makes three parts).
    fileprivate func components(separatedByDoubleColon: ()) -> [Substring] {
        var out: [Substring] = []
        var rest = self[...]
        while let r = rest.firstRange(of: "::") {
            out.append(rest[..<r.lowerBound])
            rest = rest[r.upperBound...]
        }
        out.append(rest)
        return out
    }
}
