import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Several external ports on one real `tapswitchd`, each with its own VLAN policy: one declared in the
/// config (access VLAN 10), one added at run time (a trunk of VLAN 20). The "VMs" and the networks
/// behind the uplinks are kernel stacks in network namespaces, so ping tells what crosses.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct UplinkTests {
    @Test("two uplinks with their own VLAN policies: each VLAN leaves only through its uplink, tagged or not as the policy says")
    func twoUplinks() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        let upA = n.name("ua"), peerA = n.name("pa"), upB = n.name("ub"), peerB = n.name("pb")
        let vm10 = n.name("v10"), vm20 = n.name("v20")
        // The networks behind the uplinks, and one namespace per "VM" (an internal port moved into it).
        var spaces: [String: Netns] = [:]
        for role in ["na", "nb", "n10", "n20", "r10", "r20"] {
            let ns = try Netns(name: n.name(role))
            cleanup.add("netns \(ns.name)") { ns.delete() }
            spaces[role] = ns
        }
        let nsA = spaces["na"]!, nsB = spaces["nb"]!, ns10 = spaces["n10"]!, ns20 = spaces["n20"]!
        let nsR10 = spaces["r10"]!, nsR20 = spaces["r20"]!
        for (up, peer, ns) in [(upA, peerA, nsA), (upB, peerB, nsB)] {
            try Shell.check(["ip", "link", "add", up, "type", "veth", "peer", "name", peer])
            cleanup.deleteLink(up)
            try Shell.check(["ip", "link", "set", peer, "netns", ns.name])
            try ns.check(["ip", "link", "set", peer, "up"])
        }
        // Behind A (untagged wire): 10.231.9.2 on VLAN 10's subnet, and a 10.231.10.3 that VLAN 20 must not reach.
        try nsA.check(["ip", "addr", "add", "10.231.9.2/24", "dev", peerA])
        try nsA.check(["ip", "addr", "add", "10.231.10.3/24", "dev", peerA])
        // Behind B: a tagged wire into another tapswitch (this kernel has no 802.1Q devices), a trunk of
        // VLANs 10 and 20 there, with 10.231.10.2 on VLAN 20 and a 10.231.9.3 on VLAN 10 that must stay
        // unreachable: the switch under test trunks only VLAN 20 to B.
        let far = try DaemonUnderTest(config: .text("""
            [[external]]
            device = "\(peerB)"
            vlan-mode = "trunk"
            allowed-vlans = "10,20"

            [[internal]]
            name = "\(n.name("r10"))"
            netns = "\(nsR10.name)"
            vlan = 10

            [[internal]]
            name = "\(n.name("r20"))"
            netns = "\(nsR20.name)"
            vlan = 20
            """), netns: nsB.name, cleanup: cleanup)
        try await far.start()
        for (ns, dev, ip) in [(nsR10, n.name("r10"), "10.231.9.3/24"), (nsR20, n.name("r20"), "10.231.10.2/24")] {
            try ns.check(["ip", "addr", "add", ip, "dev", dev])
            try ns.check(["ip", "link", "set", dev, "up"])
        }

        let config = """
            [[external]]
            device = "\(upA)"
            vlan = 10

            [[internal]]
            name = "\(vm10)"
            netns = "\(ns10.name)"
            vlan = 10

            [[internal]]
            name = "\(vm20)"
            netns = "\(ns20.name)"
            vlan = 20
            """
        let d = try DaemonUnderTest(config: .text(config), cleanup: cleanup)
        try await d.start()
        let added = try await d.ctl("port", "add-external", upB, "vlan-mode=trunk", "allowed-vlans=20", "--json")
        try #require(added.status == 0, "port add-external: \(added.stderr)\n\(d.log)")
        let ports = try await d.show().ports
        let a = try #require(ports.first { $0.name == upA }), b = try #require(ports.first { $0.name == upB })
        #expect(a.type == .external && b.type == .external)
        #expect(a.settings == ["vlan=10"])
        #expect(b.settings == ["vlan-mode=trunk", "allowed-vlans=20"])

        for (ns, dev, ip) in [(ns10, vm10, "10.231.9.1/24"), (ns20, vm20, "10.231.10.1/24")] {
            try ns.check(["ip", "addr", "add", ip, "dev", dev])
            try ns.check(["ip", "link", "set", dev, "up"])
        }
        func ping(_ ns: Netns, _ ip: String, count: Int = 3) throws -> Bool {
            try ns.run(["ping", "-c", "\(count)", "-i", "0.2", "-W", "1", ip], timeout: .seconds(15)).status == 0
        }
        // VLAN 10 leaves untagged through A; VLAN 20 leaves tagged through B.
        #expect(try ping(ns10, "10.231.9.2"), "VLAN 10 -> uplink A\n\(d.log)")
        #expect(try ping(ns20, "10.231.10.2"), "VLAN 20 -> uplink B (tagged)\n\(d.log)")
        // And nowhere else: VLAN 10 behind B and A's address on VLAN 20's subnet stay unreachable.
        #expect(try !ping(ns10, "10.231.9.3", count: 2), "VLAN 10 leaked to uplink B")
        #expect(try !ping(ns20, "10.231.10.3", count: 2), "VLAN 20 leaked to uplink A")

        // Removing one uplink leaves the other forwarding.
        let removed = try await d.ctl("port", "remove", upB)
        #expect(removed.status == 0, "port remove: \(removed.stderr)")
        #expect(try ping(ns10, "10.231.9.2"), "VLAN 10 after uplink B left")
    }
}
