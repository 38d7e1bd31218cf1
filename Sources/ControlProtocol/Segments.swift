import Foundation

/// A VXLAN segment: a VLAN of this switch carried to other hosts in a VXLAN VNI.
///
/// tapswitch creates and owns a kernel VXLAN device named `name` (learning on for flood-and-learn,
/// off when a control plane such as FRR's EVPN feeds the FDB), with MTU `mtu` over the underlay
/// device `underlay`, sourced from `local`; the `flood` VTEPs get all-zero FDB entries (head-end
/// replication of broadcast, unknown unicast and multicast). The device is attached as an external
/// port carrying `vlan` untagged.
///
/// Wire form (`segment-add`, `segment-list`, `state.json`): `{name, vlan, vni, local, underlay,
/// flood?, udpPort?, learning?, evpn?, ageing?, mtu?}`; config `[[segment]]`: the same keys, `udp_port` for `udpPort`.
public struct SegmentSpec: Sendable, Equatable, Codable {
    public var name: String
    public var vlan: Int
    public var vni: Int
    /// This host's VTEP address (IPv4 or IPv6), canonical text.
    public var local: String
    /// The device the encapsulated frames leave and arrive on.
    public var underlay: String
    /// Remote VTEPs that get a copy of every flooded frame (same family as `local`).
    public var flood: [String]
    public var udpPort: Int
    /// The kernel learns remote MACs from arriving frames (flood-and-learn). Off when a control plane
    /// (EVPN) installs the remote MACs.
    public var learning: Bool
    /// BGP EVPN through FRR (docs/evpn.md): the VXLAN device (learning off, no static flood list) sits in
    /// a Linux bridge `NAME-br` where zebra reads the VMs' MACs and installs the remote ones, joined to
    /// the switch by a veth pair `NAME-sw` (the switch's port) <-> `NAME-bp`.
    public var evpn: Bool
    /// Seconds a remote MAC the kernel learned stays without traffic from it (0: forever).
    public var ageing: Int
    /// The VMs' MTU the segment carries: the VXLAN device's MTU. The underlay needs this plus the
    /// encapsulation (``overhead``).
    public var mtu: Int

    public static let defaultUDPPort = 4789
    public static let vniRange = 1...16_777_215
    public static let maxFlood = 256
    public static let defaultAgeing = 300
    public static let ageingRange = 0...1_000_000
    /// Room for the `-br`, `-sw` and `-bp` suffixes of an EVPN segment's devices.
    public static let maxEVPNNameLength = 12

    /// The switch port of the segment: the VXLAN device itself, or for EVPN the veth end `NAME-sw`.
    public var portName: String { evpn ? name + "-sw" : name }
    /// EVPN: the Linux bridge and its port towards the switch.
    public var bridgeName: String { name + "-br" }
    public var bridgePortName: String { name + "-bp" }

    public init(name: String, vlan: Int, vni: Int, local: String, underlay: String, flood: [String] = [],
                udpPort: Int = SegmentSpec.defaultUDPPort, learning: Bool = true, evpn: Bool = false,
                ageing: Int = SegmentSpec.defaultAgeing, mtu: Int = 1500) {
        self.name = name
        self.vlan = vlan
        self.vni = vni
        self.local = local
        self.underlay = underlay
        self.flood = flood
        self.udpPort = udpPort
        self.learning = learning && !evpn
        self.evpn = evpn
        self.ageing = ageing
        self.mtu = mtu
    }

    /// Bytes VXLAN adds on the underlay: outer Ethernet 14 + IPv4 20 (IPv6 40) + UDP 8 + VXLAN 8.
    public var overhead: Int { local.contains(":") ? 70 : 50 }

    /// Checks every field; `prefix` names where the spec came from (a JSON path, `segment`).
    /// Returns the spec with its addresses in canonical form.
    public func validated(prefix: String) throws(FieldError) -> SegmentSpec {
        func f(_ k: String) -> String { prefix.isEmpty ? k : "\(prefix).\(k)" }
        var s = self
        _ = try Validate.interfaceName(name, field: f("name"))
        _ = try Validate.vlan(vlan, field: f("vlan"))
        s.vni = try Validate.vni(vni, field: f("vni"))
        let (family, local) = try Validate.ipAddress(local, field: f("local"))
        s.local = local
        _ = try Validate.interfaceName(underlay, field: f("underlay"))
        if underlay == name { throw FieldError(field: f("underlay"), message: "the underlay cannot be the segment's own device '\(name)'") }
        if flood.count > Self.maxFlood { throw FieldError(field: f("flood"), message: "\(flood.count) VTEPs; the limit is \(Self.maxFlood)") }
        var seen = Set<String>()
        s.flood = []
        for text in flood {
            let (fam, ip) = try Validate.ipAddress(text, field: f("flood"))
            if fam != family {
                throw FieldError(field: f("flood"), message: "'\(text)' is \(fam == AF_INET6 ? "IPv6" : "IPv4") but local \(local) is not: one underlay family per segment")
            }
            if ip == local { throw FieldError(field: f("flood"), message: "'\(text)' is this host's own VTEP (local)") }
            if !seen.insert(ip).inserted { throw FieldError(field: f("flood"), message: "'\(text)' is listed twice") }
            s.flood.append(ip)
        }
        guard (1...65535).contains(udpPort) else { throw FieldError(field: f(prefix == "segment" ? "udp_port" : "udpPort"), message: "UDP port \(udpPort) is out of range 1..65535") }
        guard Self.ageingRange.contains(ageing) else {
            throw FieldError(field: f("ageing"), message: "\(ageing) seconds is out of range \(Self.ageingRange.lowerBound)..\(Self.ageingRange.upperBound)")
        }
        _ = try Validate.mtu(mtu, field: f("mtu"))
        if evpn {
            if name.utf8.count > Self.maxEVPNNameLength {
                throw FieldError(field: f("name"), message: "an EVPN segment's name is at most \(Self.maxEVPNNameLength) characters "
                    + "(its devices add -br, -sw and -bp); '\(name)' has \(name.utf8.count)")
            }
            if !flood.isEmpty {
                throw FieldError(field: f("flood"), message: "an EVPN segment gets its flood list from EVPN type-3 routes; give no flood list")
            }
        }
        return s
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: ["name", "vlan", "vni", "local", "underlay", "flood", "udpPort", "learning", "evpn", "ageing", "mtu"])
        self.init(name: try o.require(String.self, "name"), vlan: try o.require(Int.self, "vlan"), vni: try o.require(Int.self, "vni"),
                  local: try o.require(String.self, "local"), underlay: try o.require(String.self, "underlay"),
                  flood: try o.optional([String].self, "flood") ?? [], udpPort: try o.optional(Int.self, "udpPort") ?? Self.defaultUDPPort,
                  learning: try o.optional(Bool.self, "learning") ?? true, evpn: try o.optional(Bool.self, "evpn") ?? false,
                  ageing: try o.optional(Int.self, "ageing") ?? Self.defaultAgeing, mtu: try o.optional(Int.self, "mtu") ?? 1500)
        self = try validated(prefix: codingPathString(decoder.codingPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(name, forKey: AnyKey("name"))
        try c.encode(vlan, forKey: AnyKey("vlan"))
        try c.encode(vni, forKey: AnyKey("vni"))
        try c.encode(local, forKey: AnyKey("local"))
        try c.encode(underlay, forKey: AnyKey("underlay"))
        try c.encode(flood, forKey: AnyKey("flood"))
        try c.encode(udpPort, forKey: AnyKey("udpPort"))
        try c.encode(learning, forKey: AnyKey("learning"))
        try c.encode(evpn, forKey: AnyKey("evpn"))
        try c.encode(ageing, forKey: AnyKey("ageing"))
        try c.encode(mtu, forKey: AnyKey("mtu"))
    }
}

extension Validate {
    public static func vni(_ value: Int, field: String) throws(FieldError) -> Int {
        guard SegmentSpec.vniRange.contains(value) else {
            throw FieldError(field: field, message: "VNI \(value) is out of range \(SegmentSpec.vniRange.lowerBound)..\(SegmentSpec.vniRange.upperBound)")
        }
        return value
    }

    /// A unicast IPv4 or IPv6 address; returns its family (`AF_INET`, `AF_INET6`) and canonical text.
    public static func ipAddress(_ text: String, field: String) throws(FieldError) -> (family: Int32, text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        if inet_pton(AF_INET, text, &v4) == 1 {
            let first = UInt8(truncatingIfNeeded: v4.s_addr)
            if v4.s_addr == 0 || first >= 224 { throw FieldError(field: field, message: "'\(text)' is not a unicast address") }
            _ = inet_ntop(AF_INET, &v4, &out, socklen_t(out.count))
            return (AF_INET, Self.text(out))
        }
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let first = withUnsafeBytes(of: &v6) { $0[0] }
            let zero = withUnsafeBytes(of: &v6) { $0.allSatisfy { $0 == 0 } }
            if zero || first == 0xff { throw FieldError(field: field, message: "'\(text)' is not a unicast address") }
            _ = inet_ntop(AF_INET6, &v6, &out, socklen_t(out.count))
            return (AF_INET6, Self.text(out))
        }
        throw FieldError(field: field, message: "'\(text)' is not an IPv4 or IPv6 address")
    }

    private static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
