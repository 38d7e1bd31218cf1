import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// EVPN MAC+IP without FRR: what tapswitch writes on an EVPN segment's bridge, where zebra reads it
/// (`EVPNTests` shows the routes zebra makes of it). One host namespace with its daemon and an EVPN
/// segment; VMs are TAPs with FakeVMs attached from a thread that entered the namespace.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct EVPNNeighbourTests {
    /// Attaches a FakeVM to `tap` in namespace `netns`: a thread enters the namespace (only that
    /// thread) and opens the TAP there; the fd then works from any thread.
    static func attach(tap: String, mac: String, netns: String) async throws -> GuestNIC {
        try await offPool {
            let fd = open("/run/netns/\(netns)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw TestHelperError("cannot open /run/netns/\(netns): errno \(errno)") }
            defer { close(fd) }
            // setns(2) is not in Swift's Glibc module (it needs _GNU_SOURCE): looked up in libc.
            typealias SetNS = @convention(c) (Int32, Int32) -> Int32
            guard let symbol = dlsym(nil, "setns") else { throw TestHelperError("setns not found in libc") }
            let cloneNewNet: Int32 = 0x4000_0000
            guard unsafeBitCast(symbol, to: SetNS.self)(fd, cloneNewNet) == 0 else {
                throw TestHelperError("setns into \(netns): errno \(errno)")
            }
            return try GuestNIC(tap: tap, mac: mac)
        }
    }

    @Test("A VM's allowed-ips addresses (IPv4 and IPv6) and its DHCP-snooped lease become neighbour entries on the segment bridge, and go with the binding and the VM; a restart withdraws leftovers")
    func knownAddressesBecomeNeighbours() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        let host = try Netns(name: n.name("nh"))
        cleanup.add("netns \(host.name)") { host.delete() }
        let uplink = n.name("nhu"), peer = n.name("nhp")
        try Shell.check(["ip", "link", "add", uplink, "type", "veth", "peer", "name", peer])
        cleanup.deleteLink(uplink)
        cleanup.deleteLink(peer)
        try Shell.check(["ip", "link", "set", uplink, "netns", host.name, "mtu", "1550"])
        try host.check(["ip", "addr", "add", "192.0.2.1/24", "dev", uplink])
        try host.check(["ip", "link", "set", uplink, "up"])
        let d = try DaemonUnderTest(config: .text("""
            [metrics]
            listen = ""

            [[segment]]
            name = "vxn"
            vlan = 10
            vni = 100
            local = "192.0.2.1"
            underlay = "\(uplink)"
            evpn = true
            """), netns: host.name, cleanup: cleanup)
        try await d.start()
        let neighbours: @Sendable () throws -> String = { try host.check(["ip", "neigh", "show", "nud", "all", "dev", "vxn-br"]) }
        #expect(try host.check(["bridge", "-d", "link", "show", "dev", "vxn"]).contains("neigh_suppress on"))

        let (vmTAP, serverTAP, boundTAP) = (n.name("nv"), n.name("ns"), n.name("nb"))
        let (vmMAC, serverMAC, boundMAC) = ("52:54:00:e8:00:01", "52:54:00:e8:00:09", "52:54:00:e8:00:03")
        for (vm, tap, mac, extra) in [("nv", vmTAP, vmMAC, ",dhcp-snooping=on"), ("ns", serverTAP, serverMAC, ""),
                                      ("nb", boundTAP, boundMAC, ",allowed-ips=10.80.0.3,fd00:80::3")] {
            let r = try await d.ctl("vm", "start", vm, "--nic", "\(tap),mac=\(mac),vlan=10" + extra)
            try #require(r.status == 0, "vm start \(vm): \(r.stderr)\n\(d.log)")
        }

        // A configured binding: at once, both families (IPv6 works on the bridge, which has no address).
        let bound = try neighbours()
        #expect(bound.contains("10.80.0.3 lladdr \(boundMAC) NOARP") && bound.contains("fd00:80::3 lladdr \(boundMAC) NOARP"), "\(bound)\n\(d.log)")
        #expect(try host.check(["ip", "-6", "addr", "show", "dev", "vxn-br"]).isEmpty, "the bridge got an IPv6 address")

        // A lease DHCP snooping grants: picked up by the refresh (every 5 s).
        let vm = try await Self.attach(tap: vmTAP, mac: vmMAC, netns: host.name)
        cleanup.add("detach \(vmTAP)") { vm.close() }
        let server = try await Self.attach(tap: serverTAP, mac: serverMAC, netns: host.name)
        cleanup.add("detach \(serverTAP)") { server.close() }
        _ = try await d.waitForEvents(.nicConnect, port: vmTAP)
        _ = try await d.waitForEvents(.nicConnect, port: serverTAP)
        #expect(try !neighbours().contains("10.80.0.51"), "a neighbour before any lease")
        try server.send(NICMigrationTests.dhcpAck(client: vm.mac, server: server.mac, address: 0x0A50_0033))
        #expect(try await NICMigrationTests.arrives(vm, [0x63, 0x82, 0x53, 0x63], timeout: .seconds(5)), "the ACK reached the VM")
        try await offPool {
            try waitUntil("the snooped lease on the bridge", timeout: .seconds(15), poll: .milliseconds(100)) {
                try neighbours().contains("10.80.0.51 lladdr \(vmMAC) NOARP")
            }
        }

        // The binding reset: its entries go; the VM stopped: its lease's entry goes.
        let reset = try await d.ctl("port", "reset", boundTAP, "allowed-ips")
        #expect(reset.status == 0, "\(reset.stderr)")
        let afterReset = try neighbours()
        #expect(!afterReset.contains("10.80.0.3") && !afterReset.contains("fd00:80::3"), "\(afterReset)")
        vm.close()
        _ = try await d.waitForEvents(.nicDisconnect, port: vmTAP)
        #expect(try await d.ctl("vm", "stop", "nv").status == 0)
        let afterStop = try neighbours()
        #expect(!afterStop.contains("10.80.0.51"), "\(afterStop)")

        // A restart takes the entries of the VMs still there over and withdraws the others (an entry
        // left for a VM that went while the daemon was down).
        #expect(try await d.ctl("port", "set", boundTAP, "allowed-ips=10.80.0.3").status == 0)
        #expect(try await d.stop() == 0)
        try host.check(["ip", "neigh", "replace", "10.80.0.99", "lladdr", "52:54:00:e8:00:99", "dev", "vxn-br", "nud", "noarp"])
        let bridgeBefore = try host.check(["cat", "/sys/class/net/vxn-br/ifindex"])
        try await d.start()
        #expect(try host.check(["cat", "/sys/class/net/vxn-br/ifindex"]) == bridgeBefore, "the bridge was made again, not adopted")
        let afterRestart = try neighbours()
        #expect(afterRestart.contains("10.80.0.3 lladdr \(boundMAC) NOARP") && !afterRestart.contains("10.80.0.99"),
                "\(afterRestart)\n\(d.log)")
    }
}
