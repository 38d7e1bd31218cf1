import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Three "hosts" as network namespaces joined by an underlay (a veth pair each into a Linux bridge in a
/// namespace of the test's own), a real `tapswitchd` in each host (own socket, state and config) with
/// VXLAN segments VLAN 10 <-> VNI 100 and VLAN 20 <-> VNI 200 (flood and learn: static flood lists,
/// kernel learning), and "VMs" that are kernel stacks: internal ports moved into namespaces of their own.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct SegmentTests {
    /// One host: its namespace, its underlay address and its daemon.
    struct Host {
        let ns: Netns
        let uplink: String
        let ip: String
        let daemon: DaemonUnderTest
    }

    /// A fake VM: an internal port in a namespace of its own, with a fixed MAC and address.
    struct VM {
        let port: String
        let ns: Netns
        let mac: String
        let ip: String
    }

    static let underlayMTU = 1550

    @Test("VXLAN segments across three hosts: ping and iperf3 on VNI 100, VNI 200 kept apart, MACs age out after a VM stops, restart, del")
    func floodAndLearn() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        func netns(_ role: String) throws -> Netns {
            let ns = try Netns(name: n.name(role))
            cleanup.add("netns \(ns.name)") { ns.delete() }
            return ns
        }
        // The underlay: a bridge in the test's own namespace, one veth pair per host.
        let underlay = try netns("ul")
        try underlay.check(["ip", "link", "add", "br0", "type", "bridge"])
        try underlay.check(["ip", "link", "set", "br0", "up"])
        var hostNS: [Netns] = []
        for i in 1...3 {
            let ns = try netns("h\(i)")
            let a = n.name("h\(i)u"), b = n.name("h\(i)b")
            try Shell.check(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            cleanup.deleteLink(a)
            try Shell.check(["ip", "link", "set", a, "netns", ns.name, "mtu", "\(Self.underlayMTU)"])
            try Shell.check(["ip", "link", "set", b, "netns", underlay.name, "mtu", "\(Self.underlayMTU)"])
            try underlay.check(["ip", "link", "set", b, "master", "br0", "up"])
            try ns.check(["ip", "addr", "add", "192.0.2.\(i)/24", "dev", a])
            try ns.check(["ip", "link", "set", a, "up"])
            hostNS.append(ns)
        }
        // VMs: on VLAN 10 (VNI 100) one per host; on VLAN 20 (VNI 200) one on host 2 and one on host 3,
        // all in one IP subnet, so only the VNI keeps them apart.
        var vms: [String: VM] = [:]
        for (key, host, last) in [("a1", 1, 1), ("a2", 2, 2), ("a3", 3, 3), ("b2", 2, 12), ("b3", 3, 13)] {
            vms[key] = VM(port: n.name("v" + key), ns: try netns("n" + key), mac: String(format: "02:5e:00:00:%02x:%02x", host, last),
                          ip: "10.77.0.\(last)")
        }
        func vlanOf(_ key: String) -> Int { key.hasPrefix("a") ? 10 : 20 }
        var hosts: [Host] = []
        for i in 1...3 {
            let others = (1...3).filter { $0 != i }.map { "\"192.0.2.\($0)\"" }.joined(separator: ", ")
            var config = """
                [switch]
                mac_aging_seconds = 10

                [[segment]]
                name = "vx100"
                vlan = 10
                vni = 100
                local = "192.0.2.\(i)"
                underlay = "\(n.name("h\(i)u"))"
                flood = [\(others)]
                ageing = 5

                [[segment]]
                name = "vx200"
                vlan = 20
                vni = 200
                local = "192.0.2.\(i)"
                underlay = "\(n.name("h\(i)u"))"
                flood = [\(others)]
                ageing = 5

                """
            for (key, vm) in vms.sorted(by: { $0.key < $1.key }) where key.hasSuffix("\(i)") {
                config += """

                    [[internal]]
                    name = "\(vm.port)"
                    mac = "\(vm.mac)"
                    netns = "\(vm.ns.name)"
                    vlan = \(vlanOf(key))

                    """
            }
            let d = try DaemonUnderTest(config: .text(config), netns: hostNS[i - 1].name, cleanup: cleanup)
            try await d.start()
            hosts.append(Host(ns: hostNS[i - 1], uplink: n.name("h\(i)u"), ip: "192.0.2.\(i)", daemon: d))
        }
        for vm in vms.values {
            try vm.ns.check(["ip", "addr", "add", vm.ip + "/24", "dev", vm.port])
            try vm.ns.check(["ip", "link", "set", vm.port, "up"])
        }
        let h1 = hosts[0], h2 = hosts[1], h3 = hosts[2]
        let a1 = vms["a1"]!, a2 = vms["a2"]!, a3 = vms["a3"]!, b2 = vms["b2"]!, b3 = vms["b3"]!

        // The segments as tapswitch made them: listed, a VXLAN device each with its VNI and flood list.
        let listed = try await h1.daemon.json(SegmentListAnswer.self, "segment", "list").segments
        #expect(listed.map(\.name) == ["vx100", "vx200"])
        #expect(listed.first?.flood == ["192.0.2.2", "192.0.2.3"])
        let details = try h1.ns.check(["ip", "-d", "link", "show", "vx100"])
        #expect(details.contains("vxlan id 100") && details.contains("dstport 4789") && details.contains("mtu 1500"), "\(details)")
        let flood = try h1.ns.check(["bridge", "fdb", "show", "dev", "vx100"])
        #expect(flood.contains("00:00:00:00:00:00 dst 192.0.2.2") && flood.contains("00:00:00:00:00:00 dst 192.0.2.3"), "\(flood)")

        func ping(_ from: VM, _ to: String, count: Int = 3) throws -> Bool {
            try from.ns.run(["ping", "-c", "\(count)", "-i", "0.2", "-W", "1", to], timeout: .seconds(15)).status == 0
        }
        // VLAN 10 <-> VNI 100 across hosts, both directions, and to the third host.
        #expect(try ping(a1, a2.ip), "host 1 -> host 2 on VNI 100\n\(h1.daemon.log)\n\(h2.daemon.log)")
        #expect(try ping(a2, a3.ip), "host 2 -> host 3 on VNI 100")
        #expect(try ping(a3, a1.ip), "host 3 -> host 1 on VNI 100")
        // VNI 200 works between its own VMs (positive control) and cannot reach VNI 100.
        #expect(try ping(b2, b3.ip), "host 2 -> host 3 on VNI 200")
        #expect(try !ping(b2, a1.ip, count: 2), "VNI 200 reached a VM on VNI 100")
        #expect(try !ping(b3, a2.ip, count: 2), "VNI 200 reached a VM on VNI 100")

        // TCP across hosts: iperf3 from host 1's VM to host 2's.
        let server = ChildProcess()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["ip", "netns", "exec", a2.ns.name, "iperf3", "-s", "-1", "-B", a2.ip]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        cleanup.add("iperf3 server") { if server.isRunning { server.terminate() } }
        try waitUntil("iperf3 server listening", timeout: .seconds(10), poll: .milliseconds(20)) {
            try a2.ns.run(["ss", "-ltn"]).stdout.contains(":5201")
        }
        let client = try a1.ns.run(["iperf3", "-c", a2.ip, "-n", "10M", "-J"], timeout: .seconds(60))
        #expect(client.status == 0, "iperf3 across VNI 100 failed: \(client.stdout.suffix(400)) \(client.stderr)")
        server.waitUntilExit()

        // Host 1 learned host 2's VM behind VTEP 192.0.2.2 (kernel) and on its VXLAN port (tapswitch).
        let learned = try h1.ns.check(["bridge", "fdb", "show", "dev", "vx100"])
        #expect(learned.contains("\(a2.mac) dst 192.0.2.2"), "\(learned)")
        #expect(try fdbHas(h1.daemon, a2.mac), "host 1's switch has not learned \(a2.mac)")

        // The VM on host 2 stops: host 1 forgets its MAC once it ages out (no control plane to withdraw it).
        let stopped = try await h2.daemon.ctl("port", "remove", a2.port)
        #expect(stopped.status == 0, "port remove: \(stopped.stderr)")
        try waitUntil("host 1 forgets \(a2.mac)", timeout: .seconds(40), poll: .milliseconds(250)) {
            let kernel = try h1.ns.check(["bridge", "fdb", "show", "dev", "vx100"])
            let switchHas = try fdbHas(h1.daemon, a2.mac)
            return !kernel.contains(a2.mac) && !switchHas
        }
        // Host 1's other VNI 100 traffic is unaffected.
        #expect(try ping(a1, a3.ip), "host 1 -> host 3 after host 2's VM stopped")

        // A restart of host 1's daemon adopts its VXLAN devices; forwarding resumes.
        #expect(try await h1.daemon.stop() == 0)
        try await h1.daemon.start()
        // Its internal port (host 1's VM) died with the daemon and comes back unconfigured.
        try a1.ns.check(["ip", "addr", "add", a1.ip + "/24", "dev", a1.port])
        try a1.ns.check(["ip", "link", "set", a1.port, "up"])
        #expect(try ping(a3, a1.ip), "host 3 -> host 1 after host 1's daemon restarted\n\(h1.daemon.log)")
        #expect(try await h1.daemon.json(SegmentListAnswer.self, "segment", "list").segments.map(\.name) == ["vx100", "vx200"])

        // An underlay whose MTU cannot carry the VMs' MTU plus 50 bytes is refused, and nothing is left.
        try h1.ns.check(["ip", "link", "add", "small0", "mtu", "1500", "type", "veth", "peer", "name", "small1"])
        let refused = try await h1.daemon.ctl("segment", "add", "vx300", "--vlan", "30", "--vni", "300", "--local", "192.0.2.1",
                                              "--underlay", "small0")
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("underlay small0 has MTU 1500, which cannot carry the VMs' MTU 1500 plus 50 bytes"), "\(refused.stderr)")
        #expect(try h1.ns.run(["ip", "link", "show", "vx300"]).status != 0, "a refused segment left its device behind")

        // A VM NIC on a segment's VLAN with a bigger MTU than the segment carries is refused; one that fits starts.
        let big = try await h1.daemon.ctl("vm", "start", "big", "--nic", "\(n.name("big0")),vlan=10,mtu=9000")
        #expect(big.status == 1)
        #expect(big.stderr.contains("MTU 9000 is larger than the MTU 1500 that segment vx100 carries on VLAN 10"), "\(big.stderr)")
        let fits = try await h1.daemon.ctl("vm", "start", "fits", "--nic", "\(n.name("fit0")),vlan=10,mtu=1500")
        #expect(fits.status == 0, "vm start with the segment's MTU: \(fits.stderr)")
        try await h1.daemon.ctl("vm", "stop", "fits", "--force")

        // segment del removes the port and the VXLAN device, and the record.
        let del = try await h3.daemon.ctl("segment", "del", "vx200")
        #expect(del.status == 0, "segment del: \(del.stderr)")
        #expect(try h3.ns.run(["ip", "link", "show", "vx200"]).status != 0, "vx200 still exists on host 3")
        #expect(try await h3.daemon.json(SegmentListAnswer.self, "segment", "list").segments.map(\.name) == ["vx100"])
        #expect(try await h3.daemon.port(named: "vx200") == nil)
    }

    private func fdbHas(_ d: DaemonUnderTest, _ mac: String) throws -> Bool {
        try d.ctl("fdb").stdout.lowercased().contains(mac.lowercased())
    }
}

/// `segment list --json`.
struct SegmentListAnswer: Decodable {
    var segments: [SegmentSpec]
}
