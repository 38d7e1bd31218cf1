import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Real QEMU guests on two "hosts" joined by a VXLAN segment: each host is a network namespace with its
/// own `tapswitchd` (own socket, state and config) and an underlay veth into a bridge in a namespace of
/// the test's own; the daemons carry VLAN 10 in VNI 100 and VLAN 20 in VNI 200 (flood and learn).
/// QEMU runs inside the host's namespace, on a TAP from `tapswitchctl vm start` there.
///
/// Everything (guests, daemons, namespaces and the devices in them) goes with the test's `Cleanup`,
/// also on failure.
@Suite("QEMU guests on two hosts over VXLAN", .serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct SegmentGuestTests {
    static let underlayMTU = 1550

    /// Guest A (host 1, VLAN 10) serves iperf3; guest B (host 2, VLAN 10) pings it, then a client on
    /// B's TAP runs iperf3 to it across the VNI; guest C (host 2, VLAN 20 = VNI 200) probes A meanwhile
    /// and gets no answer, though its frames did cross to host 1 on VNI 200 (positive control).
    @Test func guestsOnTwoHostsPingAndTransferAcrossVNI100NotFromVNI200() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        func netns(_ role: String) throws -> Netns {
            let ns = try Netns(name: n.name(role))
            cleanup.add("netns \(ns.name)") { ns.delete() }
            return ns
        }
        let underlay = try netns("qul")
        try underlay.check(["ip", "link", "add", "br0", "type", "bridge"])
        try underlay.check(["ip", "link", "set", "br0", "up"])
        var hosts: [(ns: Netns, daemon: DaemonUnderTest)] = []
        for i in 1...2 {
            let ns = try netns("qh\(i)")
            let uplink = n.name("qh\(i)u"), peer = n.name("qh\(i)b")
            try Shell.check(["ip", "link", "add", uplink, "type", "veth", "peer", "name", peer])
            cleanup.deleteLink(uplink)
            try Shell.check(["ip", "link", "set", uplink, "netns", ns.name, "mtu", "\(Self.underlayMTU)"])
            try Shell.check(["ip", "link", "set", peer, "netns", underlay.name, "mtu", "\(Self.underlayMTU)"])
            try underlay.check(["ip", "link", "set", peer, "master", "br0", "up"])
            try ns.check(["ip", "addr", "add", "192.0.2.\(i)/24", "dev", uplink])
            try ns.check(["ip", "link", "set", uplink, "up"])
            let other = 3 - i
            var config = ""
            for (vlan, vni) in [(10, 100), (20, 200)] {
                config += """
                    [[segment]]
                    name = "vx\(vni)"
                    vlan = \(vlan)
                    vni = \(vni)
                    local = "192.0.2.\(i)"
                    underlay = "\(uplink)"
                    flood = ["192.0.2.\(other)"]

                    """
            }
            let daemon = try DaemonUnderTest(config: .text(config), netns: ns.name, cleanup: cleanup)
            try daemon.start()
            hosts.append((ns, daemon))
        }
        let (h1, h2) = (hosts[0], hosts[1])
        let log = { "host 1:\n\(h1.daemon.log)\nhost 2:\n\(h2.daemon.log)" }

        let (tapA, tapB, tapC) = (n.name("qa"), n.name("qb"), n.name("qc"))
        let (macA, macB, macC) = (GuestSpec.randomMAC(), GuestSpec.randomMAC(), GuestSpec.randomMAC())
        try h1.daemon.startVM("xa", tap: tapA, mac: macA, vlan: 10)
        try h2.daemon.startVM("xb", tap: tapB, mac: macB, vlan: 10)
        try h2.daemon.startVM("xc", tap: tapC, mac: macC, vlan: 20)

        var serverSpec = GuestSpec(name: "xa", tap: tapA, mac: macA, ip: "10.99.40.1/24", role: .iperfServer(limit: 240))
        serverSpec.netns = h1.ns.name
        let server = try QEMUGuest(serverSpec, image: image)
        cleanup.add("kill guest A") { server.kill() }
        try server.waitForReady(timeout: .seconds(120))

        var pingSpec = GuestSpec(name: "xb", tap: tapB, mac: macB, ip: "10.99.40.2/24", role: .ping(peers: ["10.99.40.1"], count: 3))
        pingSpec.netns = h2.ns.name
        pingSpec.peerWait = 30
        let pinger = try QEMUGuest(pingSpec, image: image)
        cleanup.add("kill guest B") { pinger.kill() }
        // Same subnet as A, other VNI: only the VNI keeps it apart.
        var probeSpec = GuestSpec(name: "xc", tap: tapC, mac: macC, ip: "10.99.40.3/24", role: .noPing(peers: ["10.99.40.1"]))
        probeSpec.netns = h2.ns.name
        probeSpec.peerWait = 6
        let probe = try QEMUGuest(probeSpec, image: image)
        cleanup.add("kill guest C") { probe.kill() }

        let ping = try pinger.waitForResult(timeout: .seconds(120))
        #expect(ping.kind == "ping" && ping.ok && ping.value("received") == "3",
                "\(ping.line)\n\(pinger.serialLog)\n\(server.serialLog)\n\(log())")
        let isolated = try probe.waitForResult(timeout: .seconds(120))
        #expect(isolated.kind == "noping" && isolated.ok, "\(isolated.line)\n\(probe.serialLog)\n\(log())")
        // C's ARP requests did cross to host 1 in VNI 200: isolation by VNI, not a dead path.
        let vx200 = try #require(try h1.daemon.port(named: "vx200"))
        #expect(vx200.counters.framesIn > 0, "nothing from VNI 200 reached host 1: \(vx200)\n\(log())")
        // Host 1's kernel learned B's MAC behind host 2's VTEP (flood and learn).
        let learned = try h1.ns.check(["bridge", "fdb", "show", "dev", "vx100"])
        #expect(learned.contains("\(macB) dst 192.0.2.2"), "\(learned)")
        try #require(ping.ok, "no TCP check without ping")

        try pinger.waitForExit(timeout: .seconds(60))
        var clientSpec = GuestSpec(name: "xb2", tap: tapB, mac: macB, ip: "10.99.40.2/24",
                                   role: .iperfClient(server: "10.99.40.1", seconds: 2))
        clientSpec.netns = h2.ns.name
        let client = try QEMUGuest(clientSpec, image: image)
        cleanup.add("kill guest B's iperf3 client") { client.kill() }
        let tcp = try client.waitForResult(timeout: .seconds(120))
        #expect(tcp.kind == "tcp" && tcp.ok && (tcp.bitsPerSecond ?? 0) > 1_000_000,
                "\(tcp.line)\n\(client.serialLog)\n\(server.serialLog)\n\(log())")
        if tcp.ok {
            let served = try server.waitForResult(timeout: .seconds(30))
            #expect(served.ok, "\(served.line)\n\(server.serialLog)")
        }
        if let bps = tcp.bitsPerSecond {
            print("QEMU guests across two hosts over VXLAN (VNI 100, TCG): \(Int(bps / 1_000_000)) Mbit/s")
        }
        // The transfer went through both switches' VXLAN ports.
        for host in [h1, h2] {
            let port = try #require(try host.daemon.port(named: "vx100"))
            #expect(port.counters.framesIn > 0 && port.counters.framesOut > 0, "\(port)")
        }
    }
}

extension DaemonUnderTest {
    /// `tapswitchctl vm start VM --nic TAP,mac=MAC,vlan=N` (the TAP lives in the daemon's namespace and
    /// goes with it).
    fileprivate func startVM(_ vm: String, tap: String, mac: String, vlan: Int) throws {
        _ = try json([PortInfo].self, "vm", "start", vm, "--nic", "\(tap),mac=\(mac),vlan=\(vlan)")
    }
}
