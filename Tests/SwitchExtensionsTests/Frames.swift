import EmbeddedSwitch
import SwitchCore
import SwitchExtensions

/// Test MAC addresses 02:00:00:00:00:nn (locally administered unicast).
func mac(_ n: UInt8) -> MACAddress { MACAddress(0x02, 0, 0, 0, 0, n) }

func ip4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> UInt32 { UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d) }

func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func be64(_ v: UInt64) -> [UInt8] { be32(UInt32(v >> 32)) + be32(UInt32(v & 0xFFFF_FFFF)) }

/// An IPv6 address as two halves, from the text form.
func ip6(_ text: String) -> (UInt64, UInt64) { IPPrefix.parseIPv6(text)! }

enum Build {
    static func ethernet(_ dst: MACAddress, _ src: MACAddress, type: UInt16, _ payload: [UInt8], vlan: UInt16? = nil) -> [UInt8] {
        var f = dst.bytes + src.bytes
        if let vlan { f += [0x81, 0x00] + be16(vlan) }
        return f + be16(type) + payload
    }

    /// IPv4 packet; `totalLength` overrides the header's length field (to make lying packets).
    static func ipv4(_ dst: MACAddress, _ src: MACAddress, from: UInt32, to: UInt32, proto: UInt8, _ payload: [UInt8],
                     fragmentOffset: UInt16 = 0, totalLength: Int? = nil) -> [UInt8] {
        let total = totalLength ?? 20 + payload.count
        let header: [UInt8] = [0x45, 0] + be16(UInt16(total)) + [0, 0] + be16(fragmentOffset) + [64, proto, 0, 0] + be32(from) + be32(to)
        return ethernet(dst, src, type: 0x0800, header + payload)
    }

    static func udp(_ sourcePort: UInt16, _ destinationPort: UInt16, _ payload: [UInt8]) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
    }

    /// A TCP header (20 bytes, no options) with `flags` (0x02 SYN, 0x10 ACK, 0x12 SYN-ACK, 0x04 RST).
    static func tcp(_ sourcePort: UInt16, _ destinationPort: UInt16, flags: UInt8, _ payload: [UInt8] = []) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be32(1) + be32(0) + [0x50, flags] + be16(65535) + [0, 0, 0, 0] + payload
    }

    static func tcp4(_ dst: MACAddress, _ src: MACAddress, from: UInt32, to: UInt32, ports: (UInt16, UInt16), flags: UInt8,
                     _ payload: [UInt8] = []) -> [UInt8] {
        ipv4(dst, src, from: from, to: to, proto: 6, tcp(ports.0, ports.1, flags: flags, payload))
    }

    static func udp4(_ dst: MACAddress, _ src: MACAddress, from: UInt32, to: UInt32, ports: (UInt16, UInt16), _ payload: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        ipv4(dst, src, from: from, to: to, proto: 17, udp(ports.0, ports.1, payload))
    }

    /// A BOOTP/DHCPv4 message (op 1 request, 2 reply) with a message type and optional lease.
    static func dhcp(op: UInt8, type: UInt8, yiaddr: UInt32 = 0, chaddr: MACAddress, lease: UInt32? = nil) -> [UInt8] {
        var b: [UInt8] = [op, 1, 6, 0] + be32(0x1234_5678) + [0, 0, 0, 0] + be32(0) + be32(yiaddr) + be32(0) + be32(0)
        b += chaddr.bytes + Array(repeating: 0, count: 10)        // chaddr (16 bytes)
        b += Array(repeating: 0, count: 64 + 128)                 // sname, file
        b += be32(0x6382_5363)
        b += [53, 1, type]
        if let lease { b += [51, 4] + be32(lease) }
        b += [255]
        return b
    }

    static func dhcpServer(_ dst: MACAddress, _ src: MACAddress, type: UInt8, yiaddr: UInt32, chaddr: MACAddress, lease: UInt32? = nil) -> [UInt8] {
        udp4(dst, src, from: ip4(10, 0, 0, 1), to: 0xFFFF_FFFF, ports: (67, 68), dhcp(op: 2, type: type, yiaddr: yiaddr, chaddr: chaddr, lease: lease))
    }

    /// A DHCPv6 message (REPLY by default) with a client identifier and one IA_NA holding an IAADDR
    /// per (address, valid lifetime), and an optional IA_NA status code.
    static func dhcp6(type: UInt8 = 7, addresses: [(String, UInt32)], status: UInt16? = nil) -> [UInt8] {
        var inner: [UInt8] = []
        for (address, valid) in addresses {
            let (h, l) = ip6(address)
            inner += be16(5) + be16(24) + be64(h) + be64(l) + be32(valid / 2) + be32(valid)
        }
        if let status { inner += be16(13) + be16(2) + be16(status) }
        let ia = be32(1) + be32(0) + be32(0) + inner
        let clientID = be16(1) + be16(10) + be16(3) + be16(1) + mac(1).bytes  // DUID-LL
        return [type, 0x12, 0x34, 0x56] + clientID + be16(3) + be16(UInt16(ia.count)) + ia
    }

    /// A DHCPv6 server message (UDP 547 to 546) to `dst`, link-local to link-local.
    static func dhcp6Server(_ dst: MACAddress, _ src: MACAddress, _ message: [UInt8]) -> [UInt8] {
        ipv6(dst, src, from: ip6("fe80::9"), to: ip6("fe80::1"), next: 17, udp(547, 546, message))
    }

    /// IPv6 packet with `next` as the first next-header value and `payload` after the fixed header;
    /// `payloadLength` overrides the header's field.
    static func ipv6(_ dst: MACAddress, _ src: MACAddress, from: (UInt64, UInt64), to: (UInt64, UInt64), next: UInt8, _ payload: [UInt8],
                     payloadLength: Int? = nil) -> [UInt8] {
        let header: [UInt8] = [0x60, 0, 0, 0] + be16(UInt16(payloadLength ?? payload.count)) + [next, 255]
            + be64(from.0) + be64(from.1) + be64(to.0) + be64(to.1)
        return ethernet(dst, src, type: 0x86DD, header + payload)
    }

    /// An ICMPv6 message (type, code 0, zero checksum) with `body`.
    static func icmp6(_ type: UInt8, _ body: [UInt8]) -> [UInt8] { [type, 0, 0, 0] + body }

    static func routerAdvertisement() -> [UInt8] { icmp6(134, [64, 0] + be16(1800) + be32(0) + be32(0)) }
    static func neighborAdvertisement(target: (UInt64, UInt64)) -> [UInt8] { icmp6(136, [0x60, 0, 0, 0] + be64(target.0) + be64(target.1)) }
    /// A destination-options extension header of 8 bytes, followed by `next`.
    static func destinationOptions(next: UInt8) -> [UInt8] { [next, 0, 1, 4, 0, 0, 0, 0] }

    static func arp(_ src: MACAddress, op: UInt16 = 2, senderMAC: MACAddress? = nil, senderIP: UInt32, targetIP: UInt32,
                    dst: MACAddress = .broadcast) -> [UInt8] {
        let body: [UInt8] = [0, 1, 8, 0, 6, 4] + be16(op) + (senderMAC ?? src).bytes + be32(senderIP) + [0, 0, 0, 0, 0, 0] + be32(targetIP)
        return ethernet(dst, src, type: 0x0806, body + Array(repeating: 0, count: 18))
    }

    static func plain(_ dst: MACAddress, _ src: MACAddress, tag: UInt8 = 0xAB) -> [UInt8] {
        ethernet(dst, src, type: 0x88B5, Array(repeating: tag, count: 46))
    }
}

/// A switch with every shipped extension enabled (their default settings), as tapswitchd runs it.
func policySwitch(maxPorts: Int = 64) throws -> EmbeddedSwitch {
    let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: maxPorts, batchCapacity: 32))
    for name in ExtensionRegistry.defaultEnabled { try es.sw.enable(ExtensionRegistry.builtin.make(name)) }
    return es
}

/// ``policySwitch(maxPorts:)`` with `ipGuard` as its ip-guard, for tests that read its leases.
func policySwitch(ipGuard: IPGuard) throws -> EmbeddedSwitch {
    let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 64, batchCapacity: 32))
    for name in ExtensionRegistry.defaultEnabled {
        if name == IPGuard.extensionName { try es.sw.enable(ipGuard) } else { try es.sw.enable(ExtensionRegistry.builtin.make(name)) }
    }
    return es
}

extension EmbeddedSwitch {
    /// Drops at `port` by direction and reason text.
    func dropped(_ port: PortID, _ reasonPrefix: String, _ direction: Direction = .ingress) -> UInt64 {
        (sw.counters(of: port)?.drops ?? [:]).filter { $0.key.direction == direction && $0.key.reason.hasPrefix(reasonPrefix) }
            .values.reduce(0, +)
    }

    /// Applies `key=value` words to a port as its properties (add or update, delete when back to default).
    func set(_ port: PortID, _ words: String...) throws {
        var s = PortSettings(properties: sw.properties(of: port))
        try s.apply(words)
        try apply(s, to: port)
    }

    func apply(_ s: PortSettings, to port: PortID) throws { try sw.apply(s, to: port) }

    func counter(_ ext: String, _ name: String) -> UInt64? {
        sw.extensions.first { $0.name == ext }?.counters.first { $0.name == name }?.value
    }

    func learn(_ port: PortID, _ address: MACAddress) {
        send(from: port, Build.plain(.broadcast, address, tag: 0x01))
        for p in sw.ports { _ = take(p.id) }
    }

    func takeAll() { for p in sw.ports { _ = take(p.id) } }
}

/// Deterministic random numbers (SplitMix64) so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
