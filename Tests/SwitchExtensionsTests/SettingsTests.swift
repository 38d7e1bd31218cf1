import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

@Suite("Port settings (key=value)")
struct PortSettingsTests {
    func parse(_ words: String...) throws(SwitchError) -> PortSettings { try PortSettings.parse(words) }

    func error(_ words: String...) -> String? {
        do {
            _ = try PortSettings.parse(words)
            return nil
        } catch {
            return error.message
        }
    }

    @Test("Every key parses into the typed policy and prints back canonically")
    func roundTrip() throws {
        let s = try parse("vlan-mode=trunk", "allowed-vlans=20,10,100-199", "native-vlan=5", "mac-spoof-guard=off",
                          "allowed-macs=52:54:00:00:00:01,52:54:00:00:00:02", "ip-guard=on", "allowed-ips=10.0.0.5,10.0.1.0/24,2001:DB8::5",
                          "dhcp-snooping=on", "dhcp-guard=on", "router-guard=on", "pvlan=community:7", "mac-limit=4")
        #expect(s.vlan == .trunk(allowed: Set([10, 20] + Array(100...199)), native: 5))
        #expect(s.security.macSpoofGuard == false)
        #expect(s.security.allowedIPs.map(\.description) == ["10.0.0.5", "10.0.1.0/24", "2001:db8::5"])
        #expect(s.security.pvlan == .community(7))
        #expect(s.assignments == ["vlan-mode=trunk", "allowed-vlans=10,20,100-199", "native-vlan=5", "mac-spoof-guard=off",
                                  "allowed-macs=52:54:00:00:00:01,52:54:00:00:00:02", "ip-guard=on",
                                  "allowed-ips=10.0.0.5,10.0.1.0/24,2001:db8::5", "dhcp-snooping=on", "dhcp-guard=on",
                                  "router-guard=on", "pvlan=community:7", "mac-limit=4"])
        #expect(try PortSettings.parse(s.assignments) == s)
        #expect(PortSettings(properties: s.properties) == s)
        #expect(try parse("vlan=10").assignments == ["vlan=10"])
        #expect(try parse("vlan-mode=untagged").vlan == .untagged)
        #expect(try parse("allowed-vlans=all", "native-vlan=untagged").assignments == ["vlan-mode=trunk", "allowed-vlans=all", "native-vlan=untagged"])
        #expect(try parse("isolated=on").security.pvlan == .isolated)
        #expect(PortSettings().assignments.isEmpty && PortSettings().properties.isEmpty)
    }

    @Test("Errors are one line naming the key and the value")
    func errors() {
        #expect(error("vlan=5000") == "vlan=5000: expected a VLAN id 1-4094")
        #expect(error("vlan=ten") == "vlan=ten: expected a VLAN id 1-4094")
        #expect(error("vlan-mode=hybrid") == "vlan-mode=hybrid: expected access, trunk or untagged")
        #expect(error("vlan-mode=trunk") == "vlan-mode=trunk: a trunk needs allowed-vlans=LIST (like 10,20,100-199, or all)")
        #expect(error("vlan-mode=access") == "vlan-mode=access: an access port needs vlan=N")
        #expect(error("vlan=10", "allowed-vlans=20") == "allowed-vlans=20: conflicts with vlan=10 (vlan-mode access vs trunk)")
        #expect(error("allowed-vlans=10,300-200") == "allowed-vlans=10,300-200: '300-200' is not a VLAN range like 100-199 (ids 1-4094, low to high)")
        #expect(error("native-vlan=0") == "native-vlan=0: expected a VLAN id 1-4094, untagged or none")
        #expect(error("mac-spoof-guard=maybe") == "mac-spoof-guard=maybe: expected on or off")
        #expect(error("allowed-macs=01:00:5e:00:00:01") == "allowed-macs=01:00:5e:00:00:01: 01:00:5e:00:00:01 is not a unicast MAC address")
        #expect(error("allowed-macs=52:54:00") == "allowed-macs=52:54:00: '52:54:00' is not a MAC address like 52:54:00:12:34:56")
        #expect(error("allowed-ips=10.0.0.256") == "allowed-ips=10.0.0.256: '10.0.0.256' is not an IPv4 or IPv6 address or prefix like 10.0.0.5, 10.0.1.0/24 or 2001:db8::/64")
        #expect(error("allowed-ips=10.0.0.0/33") != nil)
        #expect(error("allowed-ips=1::2::3") != nil)
        #expect(error("pvlan=community:0") == "pvlan=community:0: expected isolated, community:N (N 1-4094), promiscuous or none")
        #expect(error("mac-limit=0") == "mac-limit=0: expected a number 1-65535 or none")
        #expect(error("isolated=on", "pvlan=promiscuous") == "pvlan=promiscuous: conflicts with isolated=on")
        #expect(error("colour=red") == "unknown port setting 'colour' in 'colour=red' (keys: vlan-mode, vlan, allowed-vlans, native-vlan, mac-spoof-guard, allowed-macs, ip-guard, allowed-ips, dhcp-snooping, dhcp-guard, router-guard, isolated, pvlan, mac-limit, acl, acl-default-in, acl-default-out, storm-broadcast, storm-multicast, storm-unknown, ingress-rate, ingress-burst, ingress-frame-rate, ingress-frame-burst, egress-rate, egress-burst, egress-frame-rate, egress-frame-burst)")
        #expect(error("vlan") == "'vlan': expected key=value (keys: vlan-mode, vlan, allowed-vlans, native-vlan, mac-spoof-guard, allowed-macs, ip-guard, allowed-ips, dhcp-snooping, dhcp-guard, router-guard, isolated, pvlan, mac-limit, acl, acl-default-in, acl-default-out, storm-broadcast, storm-multicast, storm-unknown, ingress-rate, ingress-burst, ingress-frame-rate, ingress-frame-burst, egress-rate, egress-burst, egress-frame-rate, egress-frame-burst)")
        #expect(error("vlan=10", "vlan=20") == "vlan=20: vlan is given twice")
        let many = (1...17).map { "10.0.0.\($0)" }.joined(separator: ",")
        #expect(error("allowed-ips=\(many)") == "allowed-ips=\(many): 17 addresses (at most 16)")
    }

    @Test("A change applies all or nothing; mode switches drop the other mode's settings; reset goes back to defaults")
    func changes() throws {
        var s = try parse("vlan=10", "dhcp-guard=on")
        #expect(throws: SwitchError.self) { try s.apply(["router-guard=on", "vlan=0"]) }
        #expect(s == (try parse("vlan=10", "dhcp-guard=on")))
        try s.apply(["allowed-vlans=10,20"])
        #expect(s.vlan == .trunk(allowed: [10, 20], native: nil))
        try s.apply(["native-vlan=10"])
        try s.apply(["vlan=30"])
        #expect(s.vlan == .access(30))
        try s.apply(["vlan-mode=trunk", "allowed-vlans=5"])
        #expect(s.vlan == .trunk(allowed: [5], native: nil), "the old native VLAN does not come back")
        try s.reset(["native-vlan", "dhcp-guard"])
        #expect(s.assignments == ["vlan-mode=trunk", "allowed-vlans=5"])
        try s.reset(["allowed-vlans"])
        #expect(s.vlan == nil)
        #expect(throws: SwitchError.self) { try s.reset(["colour"]) }
    }

    @Test("IPv6 text forms")
    func ipv6Text() {
        for (text, printed) in [("::", "::"), ("::1", "::1"), ("fe80::1:2", "fe80::1:2"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                                ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("::ffff:10.0.0.1", "::ffff:a00:1"), ("2001:db8::/32", "2001:db8::/32")] {
            #expect(IPPrefix(text)?.description == printed, "\(text)")
        }
        for bad in [":::", "1:2:3:4:5:6:7:8:9", "12345::", "g::1", "1::2::3", "::/129", ""] { #expect(IPPrefix(bad) == nil, "\(bad)") }
    }
}

@Suite("Extension registry")
struct RegistryTests {
    @Test("Every shipped extension builds with defaults, is a filtering extension and has counters")
    func shipped() throws {
        let es = try policySwitch()
        #expect(es.sw.extensions.map(\.name) == ExtensionRegistry.defaultEnabled)
        for info in es.sw.extensions {
            #expect(info.extensionClass == .filtering)
            #expect(!info.counters.isEmpty, "\(info.name)")
        }
    }

    @Test("Unknown or invalid settings are refused naming the key; unknown extensions name what exists")
    func settings() {
        func message(_ name: String, _ settings: [String: String]) -> String? {
            do {
                _ = try ExtensionRegistry.builtin.make(name, settings: ExtensionSettings(settings))
                return nil
            } catch {
                return error.message
            }
        }
        #expect(message("mac-spoof-guard", ["colour": "red"]) == "extension mac-spoof-guard: unknown setting 'colour' (settings: vm-default)")
        #expect(message("isolation", ["x": "1"]) == "extension isolation: unknown setting 'x' (it takes no settings)")
        #expect(message("dhcp-guard", ["vm-default": "yes please"]) == "extension dhcp-guard: vm-default=yes please: expected on or off")
        #expect(message("mac-limit", ["vm-default": "0"]) == "extension mac-limit: vm-default=0: expected a number 1-65535 or none")
        #expect(message("mac-limit", ["vm-default": "8"]) == nil)
        #expect(message("firewall", [:])?.hasPrefix("unknown extension 'firewall' (available: duplicate-mac-guard, mac-spoof-guard") == true)
    }

    @Test("A security property an extension cannot enforce is vetoed with a reason before it applies")
    func coreRefusesBadPolicy() throws {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: mac(1))
        let policy = SecurityPolicy(allowedMACs: (1...17).map { mac($0) })
        let error = #expect(throws: SwitchError.self) { try es.sw.addProperty(.security(policy), to: a) }
        #expect(error?.message == "security property for port \(a) (a): 17 allowed MACs (at most 16)")
    }
}

@Suite("Policies and malformed frames")
struct PolicyFuzzTests {
    @Test("Random frames through every policy, all on: never trap; every frame is delivered or counted as dropped")
    func fuzz() throws {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        for p in [a, b, c] {
            try es.set(p, "mac-spoof-guard=off", "ip-guard=on", "allowed-ips=0.0.0.0/1,::/1", "dhcp-snooping=on", "dhcp-guard=on",
                       "router-guard=on", "mac-limit=1000")
        }
        try es.set(c, "pvlan=promiscuous")
        var rng = SplitMix64(seed: 7)
        var sent = 0
        let templates: [[UInt8]] = [
            Build.dhcpServer(.broadcast, mac(1), type: 5, yiaddr: ip4(10, 0, 0, 9), chaddr: mac(2)),
            Build.ipv6(.broadcast, mac(1), from: ip6("fe80::1"), to: ip6("ff02::1"), next: 0, Build.destinationOptions(next: 58) + Build.routerAdvertisement()),
            Build.arp(mac(1), senderIP: ip4(10, 0, 0, 5), targetIP: ip4(10, 0, 0, 5)),
            Build.ipv6(.broadcast, mac(1), from: ip6("fe80::1"), to: ip6("fe80::2"), next: 17, Build.udp(547, 546, [7, 1, 2, 3])),
        ]
        for _ in 0..<300 {
            var frames: [[UInt8]] = []
            for _ in 0..<32 {
                var f: [UInt8]
                if rng.next() % 2 == 0 {
                    // A real policy frame, cut short and/or with bytes flipped past the Ethernet header.
                    f = templates[Int(rng.next() % UInt64(templates.count))]
                    f = Array(f.prefix(14 + Int(rng.next() % UInt64(f.count - 13))))
                    for _ in 0..<Int(rng.next() % 4) where f.count > 14 {
                        f[14 + Int(rng.next() % UInt64(f.count - 14))] = UInt8(truncatingIfNeeded: rng.next())
                    }
                } else {
                    f = (0..<Int(rng.next() % 120)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    if f.count > 6 { f[6] &= 0xFE }
                }
                frames.append(f)
            }
            es.send(from: a, frames)
            sent += frames.count
            es.takeAll()
        }
        let counters = try #require(es.sw.counters(of: a))
        #expect(counters.framesIn == UInt64(sent))
        // a and b are ordinary, c promiscuous: every frame from a reaches both, or was dropped at a.
        #expect(es.sw.counters(of: b)!.framesOut + counters.totalDrops == UInt64(sent))
        #expect(es.sw.counters(of: c)!.framesOut + counters.totalDrops == UInt64(sent))
    }
}
