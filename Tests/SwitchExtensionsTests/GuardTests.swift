import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

@Suite("IP, ARP and ND guard")
struct IPGuardTests {
    func setUp() throws -> (EmbeddedSwitch, PortID, PortID) {
        let es = try policySwitch()
        let vm = try es.addPort("vm", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        try es.set(vm, "ip-guard=on", "allowed-ips=10.0.0.5,2001:db8::5")
        return (es, vm, peer)
    }

    @Test("IPv4 and ARP: allowed sources pass; spoofed sources, ARP replies for other addresses and mismatched sender MACs are dropped")
    func ipv4AndARP() throws {
        let (es, vm, peer) = try setUp()
        es.send(from: vm, [Build.udp4(.broadcast, mac(1), from: ip4(10, 0, 0, 5), to: ip4(10, 0, 0, 9), ports: (1000, 2000)),
                           Build.arp(mac(1), senderIP: ip4(10, 0, 0, 5), targetIP: ip4(10, 0, 0, 5)),   // GARP
                           Build.arp(mac(1), op: 1, senderIP: 0, targetIP: ip4(10, 0, 0, 5)),              // probe
                           Build.udp4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, ports: (68, 67))])    // DHCP discover
        #expect(es.take(peer).count == 4)
        es.send(from: vm, [Build.udp4(.broadcast, mac(1), from: ip4(10, 0, 0, 6), to: ip4(10, 0, 0, 9), ports: (1000, 2000)),
                           Build.arp(mac(1), senderIP: ip4(10, 0, 0, 1), targetIP: ip4(10, 0, 0, 9)),    // poison the gateway
                           Build.arp(mac(1), senderMAC: mac(9), senderIP: ip4(10, 0, 0, 5), targetIP: ip4(10, 0, 0, 9)),
                           Build.udp4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, ports: (68, 99))])
        #expect(es.take(peer).isEmpty)
        #expect(es.dropped(vm, "IPv4 source") == 2)
        #expect(es.dropped(vm, "ARP sender") == 2)
        #expect(es.counter("ip-guard", "dropped-arp") == 2)
        // Other EtherTypes are not the guard's business.
        es.send(from: vm, Build.plain(.broadcast, mac(1)))
        #expect(es.take(peer).count == 1)
    }

    @Test("IPv6 and ND: allowed, link-local and unspecified sources pass; other sources and advertisements for others' addresses are dropped")
    func ipv6AndND() throws {
        let (es, vm, peer) = try setUp()
        let own = ip6("2001:db8::5"), other = ip6("2001:db8::6"), linkLocal = ip6("fe80::1"), all = ip6("ff02::1")
        es.send(from: vm, [Build.ipv6(.broadcast, mac(1), from: own, to: all, next: 59, []),
                           Build.ipv6(.broadcast, mac(1), from: linkLocal, to: all, next: 58, Build.neighborAdvertisement(target: linkLocal)),
                           Build.ipv6(.broadcast, mac(1), from: (0, 0), to: all, next: 58, Build.icmp6(135, [0, 0, 0, 0] + be64(own.0) + be64(own.1))),
                           Build.ipv6(.broadcast, mac(1), from: linkLocal, to: all, next: 58, Build.neighborAdvertisement(target: own))])
        #expect(es.take(peer).count == 4)
        es.send(from: vm, [Build.ipv6(.broadcast, mac(1), from: other, to: all, next: 59, []),
                           Build.ipv6(.broadcast, mac(1), from: linkLocal, to: all, next: 58, Build.neighborAdvertisement(target: other)),
                           // The same advertisement behind a destination-options header.
                           Build.ipv6(.broadcast, mac(1), from: linkLocal, to: all, next: 60,
                                      Build.destinationOptions(next: 58) + Build.neighborAdvertisement(target: other))])
        #expect(es.take(peer).isEmpty)
        #expect(es.dropped(vm, "IPv6 source") == 1)
        #expect(es.dropped(vm, "neighbour advertisement") == 2)
    }

    @Test("DHCP snooping: an ACK for the port's NIC grants the address for the lease; an ACK for another MAC does not")
    func snooping() throws {
        let es = try policySwitch()
        let vm = try es.addPort("vm", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        let server = try es.addPort("uplink", mac: mac(9), type: .external)
        try es.set(vm, "ip-guard=on", "dhcp-snooping=on")
        let fromLease = Build.udp4(.broadcast, mac(1), from: ip4(10, 0, 0, 77), to: ip4(10, 0, 0, 9), ports: (1000, 2000))
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty)
        es.send(from: server, Build.dhcpServer(.broadcast, mac(9), type: 5, yiaddr: ip4(10, 0, 0, 88), chaddr: mac(2), lease: 600))
        es.send(from: server, Build.dhcpServer(.broadcast, mac(9), type: 2, yiaddr: ip4(10, 0, 0, 77), chaddr: mac(1), lease: 600))  // OFFER
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty, "neither an ACK for another client nor an OFFER grants anything")
        es.send(from: server, Build.dhcpServer(.broadcast, mac(9), type: 5, yiaddr: ip4(10, 0, 0, 77), chaddr: mac(1), lease: 600))
        #expect(es.take(vm).count == 1)
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer) == [fromLease])
        #expect(es.counter("ip-guard", "snooped-leases") == 1)
        es.advance(seconds: 601)
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty, "the lease expired")
    }

    @Test("NIC save/restore: snooped leases travel to another switch with the time they had left; a bad blob is refused")
    func leasesTravelWithTheNIC() throws {
        let es = try policySwitch()
        let vm = try es.addPort("vm", mac: mac(1))
        let server = try es.addPort("uplink", mac: mac(9), type: .external)
        try es.set(vm, "ip-guard=on", "dhcp-snooping=on")
        es.send(from: server, Build.dhcpServer(.broadcast, mac(9), type: 5, yiaddr: ip4(10, 0, 0, 77), chaddr: mac(1), lease: 600))
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 600)])))
        es.takeAll()
        es.advance(seconds: 100)
        let saved = es.sw.saveNICState(of: vm)
        #expect(saved.map(\.extensionName) == [IPGuard.extensionName])

        // The destination: a new switch, the same port settings, a different port id.
        let ipGuard = try IPGuard()
        let there = try policySwitch(ipGuard: ipGuard)
        _ = try there.addPort("other", mac: mac(3))
        let moved = try there.addPort("vm", mac: mac(1))
        let peer = try there.addPort("peer", mac: mac(2))
        try there.set(moved, "ip-guard=on", "dhcp-snooping=on")
        let fromLease = Build.udp4(.broadcast, mac(1), from: ip4(10, 0, 0, 77), to: ip4(10, 0, 0, 9), ports: (1000, 2000))
        there.send(from: moved, fromLease)
        #expect(there.take(peer).isEmpty, "positive control: the lease is unknown here before the restore")
        #expect(try there.sw.restoreNICState(saved, on: moved).isEmpty)
        #expect(ipGuard.leases(of: moved, in: there.sw) == [IPPrefix(ipv4: ip4(10, 0, 0, 77)), IPPrefix(ipv6: 0x2001_0db8_0000_0000, 0x77)])
        there.send(from: moved, fromLease)
        #expect(there.take(peer) == [fromLease])
        #expect(there.counter("ip-guard", "restored-leases") == 2)
        #expect(there.counter("ip-guard", "snooped-leases") == 0)
        // 500 s were left: they run out there, not 600 s after the restore.
        there.advance(seconds: 501)
        there.send(from: moved, fromLease)
        #expect(there.take(peer).isEmpty, "the restored lease expired when the original would have")

        // A blob of another version, or cut short, is refused and grants nothing.
        let other = try there.addPort("vm2", mac: mac(4))
        var wrong = saved[0]
        wrong.version = 2
        var short = saved[0]
        short.data.removeLast()
        #expect(try there.sw.restoreNICState([wrong, short], on: other).count == 2)
        #expect(ipGuard.leases(of: other, in: there.sw).isEmpty)
    }

    @Test("DHCPv6 snooping: a REPLY's IA_NA address for the port's NIC is allowed for its valid lifetime; others are not")
    func snooping6() throws {
        let ipGuard = try IPGuard()
        let es = try policySwitch(ipGuard: ipGuard)
        let vm = try es.addPort("vm", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        let rogue = try es.addPort("rogue", mac: mac(3))
        let server = try es.addPort("uplink", mac: mac(9), type: .external)
        try es.set(vm, "ip-guard=on", "dhcp-snooping=on")
        try es.set(rogue, "dhcp-guard=on")
        let all = ip6("ff02::1")
        let fromLease = Build.ipv6(.broadcast, mac(1), from: ip6("2001:db8::77"), to: all, next: 59, [])
        let fromOther = Build.ipv6(.broadcast, mac(1), from: ip6("2001:db8::78"), to: all, next: 59, [])
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty)
        // Not for this NIC, not a REPLY, a failed IA_NA, and a REPLY from a dhcp-guarded port: nothing granted.
        es.send(from: server, Build.dhcp6Server(mac(2), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 600)])))
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(type: 2, addresses: [("2001:db8::77", 600)])))
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 600)], status: 2)))
        es.send(from: rogue, Build.dhcp6Server(mac(1), mac(3), Build.dhcp6(addresses: [("2001:db8::77", 600)])))
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty, "no REPLY for this NIC granted anything")
        #expect(es.counter("ip-guard", "snooped-leases") == 0)
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 600)])))
        #expect(es.take(vm).count == 1, "the REPLY itself is delivered")
        es.takeAll()
        es.send(from: vm, [fromLease, fromOther])
        #expect(es.take(peer) == [fromLease], "the snooped address passes, another is still dropped")
        #expect(es.counter("ip-guard", "snooped-leases") == 1)
        #expect(ipGuard.leases(of: vm, in: es.sw) == [IPPrefix(ipv6: 0x2001_0db8_0000_0000, 0x77)])
        // A neighbour advertisement for the snooped address is allowed too.
        es.send(from: vm, Build.ipv6(.broadcast, mac(1), from: ip6("fe80::1"), to: all, next: 58,
                                     Build.neighborAdvertisement(target: ip6("2001:db8::77"))))
        #expect(es.take(peer).count == 1)
        es.advance(seconds: 601)
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty, "the lease expired")
        // Renewed, then withdrawn by a REPLY with valid lifetime 0.
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 600)])))
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer).count == 1)
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::77", 0)])))
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty, "withdrawn")
    }

    @Test("DHCPv6 snooping: a REPLY is ignored without dhcp-snooping; leases are bounded per port")
    func snooping6Bounds() throws {
        let ipGuard = try IPGuard()
        let es = try policySwitch(ipGuard: ipGuard)
        let vm = try es.addPort("vm", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        let server = try es.addPort("uplink", mac: mac(9), type: .external)
        try es.set(vm, "ip-guard=on")
        let all = ip6("ff02::1")
        func from(_ a: String) -> [UInt8] { Build.ipv6(.broadcast, mac(1), from: ip6(a), to: all, next: 59, []) }
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: [("2001:db8::1", 600)])))
        es.takeAll()
        es.send(from: vm, from("2001:db8::1"))
        #expect(es.take(peer).isEmpty, "snooping is off")
        try es.set(vm, "dhcp-snooping=on")
        let many = (1...IPGuard.maxLeases + 2).map { ("2001:db8::\($0)", UInt32(600 + $0)) }
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Build.dhcp6(addresses: many)))
        es.takeAll()
        #expect(ipGuard.leases(of: vm, in: es.sw).count == IPGuard.maxLeases)
        es.send(from: vm, from("2001:db8::\(IPGuard.maxLeases + 2)"))
        #expect(es.take(peer).count == 1, "the newest address is kept")
    }

    @Test("DHCPv6 snooping: truncated and malformed REPLYs grant nothing and never crash")
    func snooping6Malformed() throws {
        let ipGuard = try IPGuard()
        let es = try policySwitch(ipGuard: ipGuard)
        let vm = try es.addPort("vm", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        let server = try es.addPort("uplink", mac: mac(9), type: .external)
        try es.set(vm, "ip-guard=on", "dhcp-snooping=on")
        let fromLease = Build.ipv6(.broadcast, mac(1), from: ip6("2001:db8::77"), to: ip6("ff02::1"), next: 59, [])
        let good = Build.dhcp6(addresses: [("2001:db8::77", 600)])
        // Every truncation of the message (the IP and UDP lengths follow, so only DHCPv6 is cut short).
        for n in 0..<good.count {
            es.send(from: server, Build.dhcp6Server(mac(1), mac(9), Array(good[..<n])))
        }
        // Option lengths that lie: each 16-bit length field set to values past the end and odd values.
        for at in [6, 20, 36] {  // client identifier, IA_NA, IAADDR
            for value: UInt16 in [0, 1, 11, 23, 0xFFFF] {
                var bad = good
                bad[at] = UInt8(value >> 8); bad[at + 1] = UInt8(value & 0xFF)
                es.send(from: server, Build.dhcp6Server(mac(1), mac(9), bad))
            }
        }
        // IP payload length past the frame, and UDP cut short.
        es.send(from: server, Build.ipv6(mac(1), mac(9), from: ip6("fe80::9"), to: ip6("fe80::1"), next: 17,
                                         Build.udp(547, 546, good), payloadLength: 8 + good.count + 40))
        es.send(from: server, Build.ipv6(mac(1), mac(9), from: ip6("fe80::9"), to: ip6("fe80::1"), next: 17, [0x02, 0x23, 0x02]))
        // Random bytes after a REPLY header or a cut REPLY (for another address, which a chance
        // well-formed result may grant).
        let other = Build.dhcp6(addresses: [("2001:db8::99", 600)])
        var random = SplitMix64(seed: 6)
        for _ in 0..<500 {
            let body = (0..<Int.random(in: 0...80, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            var message: [UInt8] = [7, 0, 0, 0] + body
            if Bool.random(using: &random) { message = Array(other[..<Int.random(in: 4...other.count, using: &random)]) + body }
            es.send(from: server, Build.dhcp6Server(mac(1), mac(9), message))
        }
        es.takeAll()
        // The fuzz may form a valid REPLY; none may grant the test's address, and no truncated one did.
        #expect(!ipGuard.leases(of: vm, in: es.sw).contains(IPPrefix(ipv6: 0x2001_0db8_0000_0000, 0x77)))
        es.send(from: vm, fromLease)
        #expect(es.take(peer).isEmpty)
        // Positive control: the whole message grants.
        es.send(from: server, Build.dhcp6Server(mac(1), mac(9), good))
        es.takeAll()
        es.send(from: vm, fromLease)
        #expect(es.take(peer) == [fromLease])
    }

    @Test("Truncated and malformed ARP/IPv4/IPv6 under the guard are dropped, never read past their end")
    func truncated() throws {
        let (es, vm, peer) = try setUp()
        var odd = Build.arp(mac(1), senderIP: ip4(10, 0, 0, 5), targetIP: ip4(10, 0, 0, 5))
        odd[14 + 4] = 8  // hardware length 8: not Ethernet ARP
        let shortDHCP = Build.ipv4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, proto: 17, [0, 68])  // 2 bytes of UDP
        let own = ip6("2001:db8::5")
        let chainPastEnd = Build.ipv6(.broadcast, mac(1), from: own, to: ip6("ff02::1"), next: 0, [58, 9, 0, 0, 0, 0, 0, 0])
        let shortNA = Build.ipv6(.broadcast, mac(1), from: own, to: ip6("ff02::1"), next: 58, [136, 0, 0, 0, 0x60, 0, 0, 0, 0x20])
        es.send(from: vm, [odd, shortDHCP, chainPastEnd, shortNA])
        #expect(es.take(peer).isEmpty)
        #expect(es.sw.counters(of: vm)!.totalDrops == 4)
    }
}

@Suite("DHCP and router guards")
struct ServerGuardTests {
    @Test("dhcp-guard: DHCPv4 OFFER/ACK/NAK and DHCPv6 ADVERTISE/REPLY from a guarded VM are dropped; its client messages pass")
    func dhcpGuard() throws {
        let es = try policySwitch()
        let rogue = try es.addPort("rogue", mac: mac(1))
        let client = try es.addPort("client", mac: mac(2))
        let honest = try es.addPort("honest", mac: mac(3))
        try es.set(rogue, "dhcp-guard=on")
        let v6from = ip6("fe80::1"), v6to = ip6("fe80::2")
        let servers = [
            Build.dhcpServer(.broadcast, mac(1), type: 2, yiaddr: ip4(10, 0, 0, 50), chaddr: mac(2)),
            Build.dhcpServer(.broadcast, mac(1), type: 5, yiaddr: ip4(10, 0, 0, 50), chaddr: mac(2)),
            Build.dhcpServer(.broadcast, mac(1), type: 6, yiaddr: 0, chaddr: mac(2)),
            Build.ipv6(.broadcast, mac(1), from: v6from, to: v6to, next: 17, Build.udp(547, 546, [2, 0, 0, 1])),
            Build.ipv6(.broadcast, mac(1), from: v6from, to: v6to, next: 17, Build.udp(547, 546, [7, 0, 0, 1])),
            // ADVERTISE behind a hop-by-hop header, and a first fragment carrying a REPLY.
            Build.ipv6(.broadcast, mac(1), from: v6from, to: v6to, next: 0, Build.destinationOptions(next: 17) + Build.udp(547, 546, [2, 0, 0, 1])),
            Build.ipv6(.broadcast, mac(1), from: v6from, to: v6to, next: 44, [17, 0, 0, 1, 0, 0, 0, 9] + Build.udp(547, 546, [7, 0, 0, 1])),
        ]
        es.send(from: rogue, servers)
        #expect(es.take(client).isEmpty)
        #expect(es.dropped(rogue, "DHCP server message") == 7)
        #expect(es.counter("dhcp-guard", "dropped-dhcpv4") == 3)
        #expect(es.counter("dhcp-guard", "dropped-dhcpv6") == 4)
        // Its own client traffic passes, and an unguarded port's OFFER passes (positive control).
        es.send(from: rogue, [Build.udp4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, ports: (68, 67), Build.dhcp(op: 1, type: 1, chaddr: mac(1))),
                              Build.ipv6(.broadcast, mac(1), from: v6from, to: v6to, next: 17, Build.udp(546, 547, [1, 0, 0, 1]))])
        #expect(es.take(client).count == 2)
        es.send(from: honest, Build.dhcpServer(.broadcast, mac(3), type: 2, yiaddr: ip4(10, 0, 0, 50), chaddr: mac(2)))
        #expect(es.take(client).count == 1)
    }

    @Test("dhcp-guard: truncated UDP from port 67/547 and unreadable IPv6 chains are dropped; later fragments pass")
    func dhcpGuardTruncated() throws {
        let es = try policySwitch()
        let rogue = try es.addPort("rogue", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        try es.set(rogue, "dhcp-guard=on")
        let v6 = ip6("fe80::1")
        es.send(from: rogue, [
            Build.ipv4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, proto: 17, Build.udp(67, 68, [])),         // no BOOTP op
            Build.ipv4(.broadcast, mac(1), from: 0, to: 0xFFFF_FFFF, proto: 17, [0, 67, 0]),                      // 3 bytes of UDP
            Build.ipv6(.broadcast, mac(1), from: v6, to: v6, next: 60, [17, 200, 0, 0, 0, 0, 0, 0]),            // header past the end
            Build.ipv6(.broadcast, mac(1), from: v6, to: v6, next: 17, Build.udp(547, 546, [])),                 // no message type
        ])
        #expect(es.take(peer).isEmpty)
        #expect(es.counter("dhcp-guard", "dropped-unreadable") == 4)
        // A non-first fragment has no UDP header to judge: it passes.
        es.send(from: rogue, [Build.ipv4(.broadcast, mac(1), from: ip4(10, 0, 0, 1), to: ip4(10, 0, 0, 2), proto: 17, [1, 2, 3, 4], fragmentOffset: 10),
                              Build.ipv6(.broadcast, mac(1), from: v6, to: v6, next: 44, [17, 0, 0, 0x50, 0, 0, 0, 9, 1, 2, 3, 4])])
        #expect(es.take(peer).count == 2)
    }

    @Test("router-guard: RAs and redirects (also behind extension headers) are dropped; other ICMP passes; off by default")
    func routerGuard() throws {
        let es = try policySwitch()
        let rogue = try es.addPort("rogue", mac: mac(1))
        let peer = try es.addPort("peer", mac: mac(2))
        let ll = ip6("fe80::1"), all = ip6("ff02::1")
        let ra = Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 58, Build.routerAdvertisement())
        es.send(from: rogue, ra)
        #expect(es.take(peer).count == 1, "off by default, as in Hyper-V")
        try es.set(rogue, "router-guard=on")
        es.send(from: rogue, [ra,
                              Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 60, Build.destinationOptions(next: 58) + Build.routerAdvertisement()),
                              Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 58, Build.icmp6(137, Array(repeating: 0, count: 36))),
                              Build.ipv4(.broadcast, mac(1), from: ip4(10, 0, 0, 1), to: ip4(10, 0, 0, 2), proto: 1, [5, 0, 0, 0, 10, 0, 0, 1]),
                              Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 58, []),                         // no ICMP type
                              Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 0, [58, 3])])                   // chain past the end
        #expect(es.take(peer).isEmpty)
        #expect(es.counter("router-guard", "dropped-ra") == 2)
        #expect(es.counter("router-guard", "dropped-redirect") == 2)
        #expect(es.counter("router-guard", "dropped-unreadable") == 2)
        es.send(from: rogue, [Build.ipv6(.broadcast, mac(1), from: ll, to: all, next: 58, Build.icmp6(128, [0, 1, 0, 1])),
                              Build.ipv4(.broadcast, mac(1), from: ip4(10, 0, 0, 1), to: ip4(10, 0, 0, 2), proto: 1, [8, 0, 0, 0, 0, 1, 0, 1])])
        #expect(es.take(peer).count == 2)
    }
}

@Suite("Isolation and private VLANs")
struct IsolationTests {
    @Test("isolated talks to promiscuous and the uplink; community to its community and promiscuous; ordinary not to either")
    func matrix() throws {
        let es = try policySwitch()
        let i1 = try es.addPort("i1", mac: mac(1)), i2 = try es.addPort("i2", mac: mac(2))
        let c1 = try es.addPort("c1", mac: mac(3)), c2 = try es.addPort("c2", mac: mac(4)), c3 = try es.addPort("c3", mac: mac(5))
        let p = try es.addPort("p", mac: mac(6)), o = try es.addPort("o", mac: mac(7))
        let up = try es.addPort("up", mac: mac(8), type: .external)
        try es.set(i1, "isolated=on")
        try es.set(i2, "pvlan=isolated")
        try es.set(c1, "pvlan=community:100"); try es.set(c2, "pvlan=community:100"); try es.set(c3, "pvlan=community:200")
        try es.set(p, "pvlan=promiscuous")
        let all = [i1, i2, c1, c2, c3, p, o, up]
        func reached(from s: PortID, _ src: MACAddress) -> Set<PortID> {
            es.send(from: s, Build.plain(.broadcast, src))
            return Set(all.filter { !es.take($0).isEmpty })
        }
        #expect(reached(from: i1, mac(1)) == [p, up])
        #expect(reached(from: c1, mac(3)) == [c2, p, up])
        #expect(reached(from: c3, mac(5)) == [p, up])
        #expect(reached(from: o, mac(7)) == [p, up])
        #expect(reached(from: p, mac(6)) == Set(all).subtracting([p]))
        #expect(reached(from: up, mac(8)) == Set(all).subtracting([up]))
        // Learned unicast between isolated ports is excluded and counted at the destination.
        es.learn(i2, mac(2))
        es.send(from: i1, Build.plain(mac(2), mac(1)))
        #expect(es.take(i2).isEmpty)
        #expect(es.dropped(i2, "private VLAN isolation", .egress) >= 1)
        // Back to ordinary: i1 and o talk again.
        try es.set(i1, "isolated=off")
        #expect(reached(from: i1, mac(1)) == [o, p, up])
    }

    @Test("Isolation applies within a VLAN: ports in another VLAN stay unreachable")
    func withinVLAN() throws {
        let es = try policySwitch()
        let p = try es.addPort("p", mac: mac(1), properties: [.vlan(.access(10))])
        let i = try es.addPort("i", mac: mac(2), properties: [.vlan(.access(20))])
        try es.set(p, "pvlan=promiscuous")
        try es.set(i, "isolated=on")
        es.send(from: i, Build.plain(.broadcast, mac(2)))
        #expect(es.take(p).isEmpty)
    }
}
