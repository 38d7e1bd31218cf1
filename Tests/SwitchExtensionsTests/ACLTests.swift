import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

@Suite("Port ACL rules (text form)")
struct ACLRuleTextTests {
    func error(_ text: String) -> String? {
        do {
            _ = try ACLRule(text)
            return nil
        } catch {
            return error.message
        }
    }

    @Test("A rule with every field prints back canonically and parses to itself")
    func roundTrip() throws {
        let r = try ACLRule("action=deny direction=in proto=tcp src-ip=10.0.0.0/8 dst-ip=10.1.2.3 dst-port=20-22 src-port=1024-65535 "
                            + "src-mac=52:54:00:00:00:01 dst-mac=52:54:00:00:00:02 vlan=10 ethertype=ipv4 established=yes id=7 priority=5")
        #expect(r.text == "id=7 direction=in priority=5 src-mac=52:54:00:00:00:01 dst-mac=52:54:00:00:00:02 ethertype=ipv4 vlan=10 "
                + "src-ip=10.0.0.0/8 dst-ip=10.1.2.3 proto=tcp src-port=1024-65535 dst-port=20-22 established=yes action=deny")
        #expect(try ACLRule(r.text) == r)
        let i = try ACLRule("direction=out proto=icmpv6 icmp-type=135 src-ip=2001:db8::/32 action=count")
        #expect(try ACLRule(i.text) == i)
        #expect(try ACLRule("direction=in ethertype=0x88cc action=deny").etherType == 0x88CC)
        #expect(try ACLRule("direction=in action=allow").matchWords.isEmpty)
    }

    @Test("Bad rules get one line naming the field and the value")
    func errors() {
        #expect(error("direction=in proto=tcp dst-port=70000 action=deny") == "dst-port=70000: expected a port 0-65535 or a range like 1024-65535")
        #expect(error("direction=in proto=tcp dst-port=30-20 action=deny") == "dst-port=30-20: expected a range like 1024-65535 (ports 0-65535, low to high)")
        #expect(error("proto=tcp action=deny") == "direction: missing (in or out)")
        #expect(error("direction=sideways action=deny") == "direction=sideways: expected in or out")
        #expect(error("direction=in") == "action: missing (allow, deny or count)")
        #expect(error("direction=in action=reject") == "action=reject: expected allow, deny or count")
        #expect(error("direction=in dst-port=22 action=deny") == "dst-port needs proto=tcp or proto=udp")
        #expect(error("direction=in proto=udp established=yes action=allow") == "established=yes needs proto=tcp (it is proto=udp)")
        #expect(error("direction=in icmp-type=8 action=allow") == "icmp-type needs proto=icmp or proto=icmpv6")
        #expect(error("direction=in src-ip=10.0.0.1 dst-ip=2001:db8::1 action=deny") == "src-ip=10.0.0.1 and dst-ip=2001:db8::1: one is IPv4, the other IPv6")
        #expect(error("direction=in src-ip=10.0.0.300 action=deny")
                == "src-ip=10.0.0.300: not an IPv4 or IPv6 address or prefix like 10.0.0.5, 10.0.1.0/24 or 2001:db8::/64")
        #expect(error("direction=in ethertype=ipv6 src-ip=10.0.0.1 action=deny") == "ethertype=ipv6 conflicts with an IPv4 address")
        #expect(error("direction=in proto=tcpp action=deny") == "proto=tcpp: expected tcp, udp, icmp, icmpv6, sctp or a protocol number 0-255")
        #expect(error("direction=in vlan=5000 action=deny") == "vlan=5000: expected a VLAN id 0-4094 (0: untagged)")
        #expect(error("direction=in priority=0 action=deny") == "priority=0: expected a number 1-1000000 (lowest first)")
        #expect(error("direction=in colour=red action=deny")?.hasPrefix("unknown ACL field 'colour' in 'colour=red' (fields: id, direction") == true)
        #expect(error("direction=in src-mac=52:54 action=deny") == "src-mac=52:54: not a MAC address like 52:54:00:12:34:56")
        #expect(error("direction=in direction=out action=deny") == "direction is given twice")
    }

    @Test("The port setting: ids and priorities given in order, a bad rule named by its place")
    func settings() throws {
        let s = try PortSettings.parse(["acl=direction=in proto=tcp dst-port=22 action=deny,direction=in action=allow,direction=out priority=5 action=count",
                                        "acl-default-in=deny"])
        #expect(s.acl.rules.map(\.id) == [1, 2, 3])
        #expect(s.acl.rules.map(\.priority) == [10, 20, 5])
        #expect(s.acl.defaultAction(.in) == .deny && s.acl.defaultAction(.out) == .allow)
        #expect(try PortSettings.parse(s.assignments) == s)
        #expect(PortSettings(properties: s.properties) == s)
        do {
            _ = try PortSettings.parse(["acl=direction=in action=allow,direction=in proto=udp dst-port=x action=deny"])
            Issue.record("accepted a bad rule")
        } catch {
            #expect(error.message == "acl rule 2 ('direction=in proto=udp dst-port=x action=deny'): dst-port=x: expected a port 0-65535 or a range like 1024-65535")
        }
        #expect(throws: SwitchError.self) { try PortSettings.parse(["acl-default-in=count"]) }
        var acl = PortACL()
        let a = try acl.add(ACLRule("direction=in action=deny"))
        let b = try acl.add(ACLRule("direction=in priority=1 action=allow"))
        #expect(a.id == 1 && b.id == 2 && acl.rules(.in).map(\.id) == [2, 1])
        try acl.remove(id: 1)
        #expect(throws: SwitchError.self) { try acl.remove(id: 1) }
    }
}

@Suite("Port ACL on the switch")
struct ACLSwitchTests {
    let vmA = mac(0x0A), vmB = mac(0x0B), vmC = mac(0x0C)
    let ipA = ip4(10, 0, 0, 10), ipB = ip4(10, 0, 0, 11)

    func three() throws -> (EmbeddedSwitch, PortID, PortID, PortID) {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: vmA), b = try es.addPort("b", mac: vmB), c = try es.addPort("c", mac: vmC)
        es.learn(a, vmA)
        es.learn(b, vmB)
        es.learn(c, vmC)
        return (es, a, b, c)
    }

    func tcp(_ es: EmbeddedSwitch, _ from: PortID, to dst: MACAddress, port: UInt16, flags: UInt8 = 0x02, src: MACAddress? = nil) {
        es.send(from: from, Build.tcp4(dst, src ?? vmA, from: ipA, to: ipB, ports: (40000, port), flags: flags))
    }

    func hits(_ es: EmbeddedSwitch, _ port: PortID) -> [Int: UInt64] {
        let acl = es.sw.enabledExtension(named: "acl") as! PortACLFilter
        var out: [Int: UInt64] = [:]
        for r in acl.ruleHits(port: port, in: es.sw)?.rules ?? [] { out[r.rule.id] = r.hits }
        return out
    }

    @Test("Deny TCP 22 inbound while 80 passes; the deny is counted at the port's egress and on the rule")
    func denySSH() throws {
        let (es, a, b, c) = try three()
        try es.set(b, "acl=direction=in proto=tcp dst-port=22 action=deny")
        tcp(es, a, to: vmB, port: 22)
        #expect(es.take(b).isEmpty)
        #expect(es.dropped(b, "denied by an ACL rule", .egress) == 1)
        tcp(es, a, to: vmB, port: 80)
        #expect(es.take(b).count == 1)
        // Positive control: another port without the rule takes TCP 22.
        tcp(es, a, to: vmC, port: 22)
        #expect(es.take(c).count == 1)
        #expect(hits(es, b) == [1: 1])
        // A broadcast reaches the others, but not b when the rule matches it: per-destination.
        try es.set(b, "acl=direction=in ethertype=0x88b5 action=deny")
        es.send(from: a, Build.plain(.broadcast, vmA))
        #expect(es.take(b).isEmpty && es.take(c).count == 1)
    }

    @Test("Established only: replies (ACK or RST) pass, a new connection's SYN is denied")
    func established() throws {
        let (es, a, b, _) = try three()
        try es.set(b, "acl=direction=in proto=tcp established=yes action=allow,direction=in proto=tcp action=deny")
        tcp(es, a, to: vmB, port: 5000, flags: 0x02)
        #expect(es.take(b).isEmpty)
        for flags: UInt8 in [0x12, 0x10, 0x18, 0x04, 0x11] {
            tcp(es, a, to: vmB, port: 5000, flags: flags)
            #expect(es.take(b).count == 1, "flags \(flags)")
        }
        #expect(hits(es, b) == [1: 5, 2: 1])
        // UDP is not TCP: neither rule matches, the default allows.
        es.send(from: a, Build.udp4(vmB, vmA, from: ipA, to: ipB, ports: (1, 2)))
        #expect(es.take(b).count == 1)
    }

    @Test("Count rules count and go on; priorities order the rules, lowest first")
    func countAndPriority() throws {
        let (es, a, b, _) = try three()
        try es.set(b, "acl=direction=in priority=50 proto=tcp action=deny,direction=in priority=10 proto=tcp action=count,direction=in priority=20 proto=tcp dst-port=80 action=allow")
        for port: UInt16 in [80, 80, 443] { tcp(es, a, to: vmB, port: port) }
        #expect(es.take(b).count == 2)
        #expect(hits(es, b) == [1: 1, 2: 3, 3: 2])
        #expect(es.counter("acl", "denied-in") == 1)
    }

    @Test("Outbound rules drop at the source before forwarding; a default deny with an allow list")
    func outboundDefaultDeny() throws {
        let (es, a, b, _) = try three()
        try es.set(a, "acl=direction=out ethertype=arp action=allow,direction=out proto=tcp dst-port=80 action=allow", "acl-default-out=deny")
        tcp(es, a, to: vmB, port: 80)
        #expect(es.take(b).count == 1)
        tcp(es, a, to: vmB, port: 22)
        #expect(es.take(b).isEmpty)
        #expect(es.dropped(a, "denied by the ACL default") == 1)
        es.send(from: a, Build.arp(vmA, senderIP: ipA, targetIP: ipB))
        #expect(es.take(b).count == 1)
        // Back to defaults: everything passes again.
        var s = PortSettings(properties: es.sw.properties(of: a))
        try s.reset(["acl", "acl-default-out"])
        try es.apply(s, to: a)
        tcp(es, a, to: vmB, port: 22)
        #expect(es.take(b).count == 1)
        #expect(es.counter("acl", "ports-out") == 0)
    }

    @Test("Every match field matches what it names and nothing else", arguments: [
        ("src-mac=02:00:00:00:00:0a", true), ("src-mac=02:00:00:00:00:0c", false),
        ("dst-mac=02:00:00:00:00:0b", true), ("dst-mac=02:00:00:00:00:0a", false),
        ("ethertype=ipv4", true), ("ethertype=ipv6", false), ("vlan=0", true), ("vlan=10", false),
        ("src-ip=10.0.0.0/24", true), ("src-ip=10.0.1.0/24", false), ("dst-ip=10.0.0.11", true), ("dst-ip=10.0.0.12", false),
        ("src-ip=::/0", false), ("proto=udp", true), ("proto=tcp", false), ("proto=17", true),
        ("proto=udp src-port=5353", true), ("proto=udp src-port=1-5352", false), ("proto=udp dst-port=50-60", true),
        ("proto=udp dst-port=54", false), ("proto=icmp icmp-type=8", false),
    ])
    func fields(_ match: String, _ expected: Bool) throws {
        let (es, a, b, _) = try three()
        try es.set(b, "acl=direction=in \(match) action=deny")
        es.send(from: a, Build.udp4(vmB, vmA, from: ipA, to: ipB, ports: (5353, 53)))
        #expect(es.take(b).count == (expected ? 0 : 1), "\(match)")
    }

    @Test("IPv6 prefixes, ICMP types and VLANs on a trunk")
    func ipv6AndICMP() throws {
        let (es, a, b, _) = try three()
        let src = ip6("2001:db8:1::10"), dst = ip6("2001:db8:2::11")
        try es.set(b, "acl=direction=in src-ip=2001:db8:1::/48 proto=icmpv6 icmp-type=128 action=deny")
        es.send(from: a, Build.ipv6(vmB, vmA, from: src, to: dst, next: 58, Build.icmp6(128, [0, 1, 0, 1])))
        #expect(es.take(b).isEmpty)
        es.send(from: a, Build.ipv6(vmB, vmA, from: src, to: dst, next: 58, Build.icmp6(129, [0, 1, 0, 1])))
        #expect(es.take(b).count == 1)
        es.send(from: a, Build.ipv6(vmB, vmA, from: ip6("2001:db8:3::10"), to: dst, next: 58, Build.icmp6(128, [0, 1, 0, 1])))
        #expect(es.take(b).count == 1)
        // Behind an extension header the ICMPv6 type is still found.
        es.send(from: a, Build.ipv6(vmB, vmA, from: src, to: dst, next: 60, Build.destinationOptions(next: 58) + Build.icmp6(128, [0, 1, 0, 1])))
        #expect(es.take(b).isEmpty)
        // An IPv4 frame never matches an IPv6 prefix.
        es.send(from: a, Build.ipv4(vmB, vmA, from: ipA, to: ipB, proto: 1, [8, 0, 0, 0, 0, 1, 0, 1]))
        #expect(es.take(b).count == 1)

        let t = try es.addPort("t", mac: mac(0x1F), properties: [.vlan(.trunk(allowed: [10, 20], native: nil))])
        let v10 = try es.addPort("v10", mac: mac(0x10), properties: [.vlan(.access(10))])
        let v20 = try es.addPort("v20", mac: mac(0x20), properties: [.vlan(.access(20))])
        try es.set(t, "acl=direction=out vlan=20 action=deny")
        es.send(from: t, Build.ethernet(.broadcast, mac(0x1F), type: 0x88B5, Array(repeating: 1, count: 46), vlan: 10))
        es.send(from: t, Build.ethernet(.broadcast, mac(0x1F), type: 0x88B5, Array(repeating: 1, count: 46), vlan: 20))
        #expect(es.take(v10).count == 1 && es.take(v20).isEmpty)
    }

    @Test("Hit counters survive other rules' changes; a changed rule keeps its id's count")
    func countersSurvive() throws {
        let (es, a, b, _) = try three()
        try es.set(b, "acl=id=4 direction=in proto=tcp action=count")
        tcp(es, a, to: vmB, port: 1)
        tcp(es, a, to: vmB, port: 2)
        try es.set(b, "acl=id=4 direction=in proto=tcp action=count,id=9 direction=in proto=udp action=deny")
        tcp(es, a, to: vmB, port: 3)
        #expect(hits(es, b) == [4: 3, 9: 0])
        // A frame from the switch itself (trusted) bypasses the ACL.
        try es.set(b, "acl-default-in=deny")
        _ = es.take(b)
        let sw = es.sw
        final class Injector: SwitchExtension {
            let name = "injector"
            let extensionClass = ExtensionClass.filtering
            var frame: [UInt8] = []
            func ingress(_ context: inout IngressContext) {
                guard !frame.isEmpty else { return }
                frame.withUnsafeBytes { _ = context.inject($0) }
                frame = []
            }
        }
        let inj = Injector()
        try sw.enable(inj)
        inj.frame = Build.plain(vmB, mac(0x77))
        tcp(es, a, to: vmB, port: 4)
        #expect(es.take(b).count == 1, "the injected frame only")
    }

    @Test("Random and truncated frames with rules on every field never crash or leak past a deny-all")
    func fuzz() throws {
        let (es, a, b, _) = try three()
        try es.set(b, "acl=direction=in proto=tcp established=yes action=count,direction=in src-ip=::/0 proto=udp dst-port=1-100 action=count,"
                   + "direction=in proto=icmp icmp-type=8 action=count", "acl-default-in=deny")
        try es.set(a, "acl=direction=out proto=tcp src-port=1-65535 action=count")
        var rng = SplitMix64(seed: 14)
        let seeds: [[UInt8]] = [
            Build.tcp4(vmB, vmA, from: ipA, to: ipB, ports: (1, 2), flags: 0x10),
            Build.udp4(vmB, vmA, from: ipA, to: ipB, ports: (1, 2)),
            Build.ipv6(vmB, vmA, from: ip6("::1"), to: ip6("::2"), next: 17, Build.udp(1, 2, [1])),
        ]
        for _ in 0..<3000 {
            var f = seeds[Int(rng.next() % UInt64(seeds.count))]
            let cut = 12 + Int(rng.next() % UInt64(f.count - 11))
            f = Array(f[0..<cut])
            for _ in 0..<Int(rng.next() % 4) where f.count > 12 {
                f[12 + Int(rng.next() % UInt64(f.count - 12))] = UInt8(truncatingIfNeeded: rng.next())
            }
            es.send(from: a, f)
        }
        #expect(es.take(b).isEmpty)
    }
}
