import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Real QEMU guests on a real `tapswitchd`, driven only through `tapswitchctl`: the VM's TAPs come
/// from `tapswitchctl vm start`, QEMU attaches with `-netdev tap,ifname=TAP,script=no,downscript=no`.
/// Each test runs its own daemon (temp socket and state dir) and leaves no TAP, QEMU or daemon behind.
///
/// Run alone: `swift test --filter QEMUTests.EndToEndTests` (needs root, /dev/net/tun, qemu-system-x86_64,
/// and the `tapswitchd`/`tapswitchctl` products built in the same scratch path, or `TAPSWITCH_BIN_DIR`).
@Suite("tapswitchd end to end with QEMU guests", .serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct EndToEndTests {
    /// Both guests ping each other at once (so both directions are proven), then an iperf3 transfer
    /// with default virtio offloads: the client sends TSO superframes with partial checksums, which
    /// must cross the switch intact.
    @Test func twoGuestsPingEachOtherAndTransferTCP() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let (tapA, tapB) = (names.name("a"), names.name("b"))
        let (macA, macB) = (GuestSpec.randomMAC(), GuestSpec.randomMAC())
        try daemon.startVM("e2e-a", tap: tapA, mac: macA, cleanup: cleanup)
        try daemon.startVM("e2e-b", tap: tapB, mac: macB, cleanup: cleanup)
        let log = { daemon.log }

        var specA = GuestSpec(name: "pa", tap: tapA, mac: macA, ip: "10.99.1.1/24", role: .ping(peers: ["10.99.1.2"], count: 3))
        var specB = GuestSpec(name: "pb", tap: tapB, mac: macB, ip: "10.99.1.2/24", role: .ping(peers: ["10.99.1.1"], count: 3))
        // Boots differ by a few seconds at most; a shorter wait makes a broken data path fail sooner.
        specA.peerWait = 20
        specB.peerWait = 20
        // Each stays up answering its peer's pings after its own: the first to finish powering off
        // lost the other's last echo now and then (received=2 of 3).
        specA.linger = true
        specB.linger = true
        let pingA = try QEMUGuest(specA, image: image)
        let pingB = try QEMUGuest(specB, image: image)
        cleanup.add("kill ping guests") { pingA.kill(); pingB.kill() }
        var pingsOK = true
        for (guest, peer) in [(pingA, "10.99.1.2"), (pingB, "10.99.1.1")] {
            let result = try guest.waitForResult()
            let ok = result.kind == "ping" && result.ok && result.value("received") == "3" && result.value("peer") == peer
            #expect(ok, "\(guest.spec.name): \(result.line)\n\(guest.serialLog)\n\(log())")
            pingsOK = pingsOK && ok
        }
        try #require(pingsOK, "no TCP check without ping")
        // Both results are in: stop the lingering guests; the TAPs must be free before the next pair attaches.
        pingA.kill()
        pingB.kill()
        try pingA.waitForExit(timeout: .seconds(30))
        try pingB.waitForExit(timeout: .seconds(30))

        let server = try QEMUGuest(GuestSpec(name: "srv", tap: tapA, mac: macA, ip: "10.99.1.1/24",
                                             role: .iperfServer(limit: 90)), image: image)
        let client = try QEMUGuest(GuestSpec(name: "cli", tap: tapB, mac: macB, ip: "10.99.1.2/24",
                                             role: .iperfClient(server: "10.99.1.1", seconds: 2)), image: image)
        cleanup.add("kill iperf guests") { server.kill(); client.kill() }
        let tcp = try client.waitForResult(timeout: .seconds(120))
        #expect(tcp.kind == "tcp" && tcp.ok && (tcp.bitsPerSecond ?? 0) > 1_000_000,
                "\(tcp.line)\n\(client.serialLog)\n\(server.serialLog)\n\(log())")
        // A failed client leaves the server listening until its limit: only wait for a finished one.
        if tcp.ok {
            let served = try server.waitForResult(timeout: .seconds(30))
            #expect(served.ok, "\(served.line)\n\(server.serialLog)\n\(log())")
        }
        if let bps = tcp.bitsPerSecond { print("e2e TCP through tapswitchd: \(Int(bps / 1_000_000)) Mbit/s") }

        // The transfer went through the switch's ports (not some other path).
        let portA = try #require(try daemon.port(named: tapA))
        let portB = try #require(try daemon.port(named: tapB))
        #expect(portA.counters.framesIn > 0 && portB.counters.framesIn > 0, "\(portA) \(portB)")
    }

    /// The documented lifecycle: create events at `vm start`, connect only once QEMU attaches,
    /// disconnect when QEMU is SIGKILLed (port stays, the other VM unaffected), connect again on
    /// re-attach with traffic flowing, and a full teardown at `vm stop`.
    @Test func lifecycleEventsFollowQEMU() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let log = { daemon.log }
        let (tapA, tapB) = (names.name("la"), names.name("lb"))
        let (macA, macB) = (GuestSpec.randomMAC(), GuestSpec.randomMAC())
        try daemon.startVM("life-a", tap: tapA, mac: macA, cleanup: cleanup)
        try daemon.startVM("life-b", tap: tapB, mac: macB, cleanup: cleanup)

        // Before QEMU: port-create then nic-create per port, no nic-connect, NIC "created".
        let before = try daemon.events()
        for (tap, vm) in [(tapA, "life-a"), (tapB, "life-b")] {
            let kinds = before.filter { $0.portName == tap }.map(\.kind.rawValue)
            #expect(kinds == ["port-create", "nic-create"], "\(tap): \(kinds)\n\(log())")
            #expect(before.first { $0.portName == tap && $0.kind == .nicCreate }?.vmName == vm)
            #expect(try daemon.port(named: tap)?.nic?.state == .created)
        }

        let idleA = try QEMUGuest(GuestSpec(name: "ia", tap: tapA, mac: macA, ip: "10.99.2.1/24", role: .idle), image: image)
        let idleB = try QEMUGuest(GuestSpec(name: "ib", tap: tapB, mac: macB, ip: "10.99.2.2/24", role: .idle), image: image)
        cleanup.add("kill lifecycle guests") { idleA.kill(); idleB.kill() }
        for tap in [tapA, tapB] {
            let connects = try daemon.waitForEvents(.nicConnect, port: tap)
            let create = try #require(before.first { $0.portName == tap && $0.kind == .nicCreate })
            #expect(connects.count == 1 && connects[0].seq > create.seq, "\(connects.map(\.summary))")
            #expect(try daemon.port(named: tap)?.nic?.state == .connected)
        }
        try idleA.waitForReady()
        try idleB.waitForReady()

        // Pull B's plug: nic-disconnect for B only, B's port and TAP stay, A unaffected.
        idleB.kill()
        try idleB.waitForExit(timeout: .seconds(10))
        try daemon.waitForEvents(.nicDisconnect, port: tapB)
        #expect(try daemon.events().filter { $0.portName == tapA && $0.kind == .nicDisconnect }.isEmpty)
        #expect(try daemon.port(named: tapB)?.nic?.state == .disconnected)
        #expect(try daemon.port(named: tapA)?.nic?.state == .connected)
        #expect(try Shell.run(["ip", "link", "show", "dev", tapB]).status == 0, "TAP \(tapB) vanished with its QEMU")
        #expect(idleA.isRunning)

        // QEMU back on B's TAP: nic-connect again, and a fresh guest there reaches A.
        var pingerSpec = GuestSpec(name: "pb2", tap: tapB, mac: macB, ip: "10.99.2.2/24", role: .ping(peers: ["10.99.2.1"], count: 3))
        pingerSpec.peerWait = 20
        let pinger = try QEMUGuest(pingerSpec, image: image)
        cleanup.add("kill re-attached guest") { pinger.kill() }
        try daemon.waitForEvents(.nicConnect, port: tapB, count: 2)
        let ping = try pinger.waitForResult()
        #expect(ping.ok && ping.value("received") == "3", "\(ping.line)\n\(pinger.serialLog)\n\(idleA.serialLog)\n\(log())")
        try pinger.waitForExit(timeout: .seconds(30))
        try daemon.waitForEvents(.nicDisconnect, port: tapB, count: 2)

        // Both guests gone; vm stop tears everything down.
        idleA.kill()
        try idleA.waitForExit(timeout: .seconds(10))
        try daemon.waitForEvents(.nicDisconnect, port: tapA)
        try daemon.stopVM("life-a")
        try daemon.stopVM("life-b")
        let after = try daemon.events()
        for tap in [tapA, tapB] {
            let kinds = after.filter { $0.portName == tap }.map(\.kind.rawValue)
            #expect(Array(kinds.suffix(3)) == ["nic-delete", "port-teardown", "port-delete"], "\(tap): \(kinds)\n\(log())")
            #expect(kinds.filter { $0 == "nic-connect" }.count == (tap == tapA ? 1 : 2), "\(tap): \(kinds)")
            #expect(try Shell.run(["ip", "link", "show", "dev", tap]).status != 0, "TAP \(tap) still exists after vm stop")
        }
        let left = try daemon.show().ports
        #expect(left.isEmpty, "ports left after vm stop: \(left)")
    }

    /// Access VLANs: the switch tags and untags, the guests send untagged. Same VLAN reaches,
    /// a different VLAN does not, though its frames do reach the switch.
    @Test func accessVLANsIsolateGuests() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let log = { daemon.log }
        let (tapTarget, tapSame, tapOther) = (names.name("v10a"), names.name("v10b"), names.name("v20"))
        let macs = (GuestSpec.randomMAC(), GuestSpec.randomMAC(), GuestSpec.randomMAC())
        try daemon.startVM("vlan-a", tap: tapTarget, mac: macs.0, vlan: 10, cleanup: cleanup)
        try daemon.startVM("vlan-b", tap: tapSame, mac: macs.1, vlan: 10, cleanup: cleanup)
        try daemon.startVM("vlan-c", tap: tapOther, mac: macs.2, vlan: 20, cleanup: cleanup)
        #expect(try daemon.port(named: tapOther)?.vlan == 20)

        let target = try QEMUGuest(GuestSpec(name: "v10a", tap: tapTarget, mac: macs.0, ip: "10.99.3.1/24", role: .idle),
                                   image: image)
        cleanup.add("kill target") { target.kill() }
        // The isolation check only means something once the target is up and answering.
        try target.waitForReady()
        var sameSpec = GuestSpec(name: "v10b", tap: tapSame, mac: macs.1, ip: "10.99.3.2/24", role: .ping(peers: ["10.99.3.1"], count: 3))
        sameSpec.peerWait = 20
        let same = try QEMUGuest(sameSpec, image: image)
        var otherSpec = GuestSpec(name: "v20", tap: tapOther, mac: macs.2, ip: "10.99.3.3/24",
                                  role: .noPing(peers: ["10.99.3.1"]))
        otherSpec.peerWait = 6
        let other = try QEMUGuest(otherSpec, image: image)
        cleanup.add("kill vlan guests") { same.kill(); other.kill() }

        let reached = try same.waitForResult()
        #expect(reached.kind == "ping" && reached.ok, "\(reached.line)\n\(same.serialLog)\n\(target.serialLog)\n\(log())")
        let isolated = try other.waitForResult()
        #expect(isolated.kind == "noping" && isolated.ok, "\(isolated.line)\n\(other.serialLog)\n\(log())")
        // VLAN 20's ARP requests did enter the switch: isolation, not a dead NIC.
        let otherPort = try #require(try daemon.port(named: tapOther))
        #expect(otherPort.counters.framesIn > 0, "\(otherPort)")
    }

    /// A trunk port: the guest talks on its VLAN subinterfaces (`ip link add link eth0 name eth0.10
    /// type vlan id 10`, and eth0.20) to access guests on VLAN 10 and on VLAN 20; the two access
    /// guests, in one IPv4 subnet (so they ARP for each other directly), stay apart.
    @Test func trunkGuestWithVLANSubinterfaces() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let log = { daemon.log }
        let (tapTrunk, tapTen, tapTwenty) = (names.name("trk"), names.name("a10"), names.name("a20"))
        let macs = (GuestSpec.randomMAC(), GuestSpec.randomMAC(), GuestSpec.randomMAC())
        try daemon.startVM("trunk", tap: tapTrunk, mac: macs.0, settings: "vlan-mode=trunk,allowed-vlans=10,20", cleanup: cleanup)
        try daemon.startVM("ten", tap: tapTen, mac: macs.1, vlan: 10, cleanup: cleanup)
        try daemon.startVM("twenty", tap: tapTwenty, mac: macs.2, vlan: 20, cleanup: cleanup)
        #expect(try daemon.port(named: tapTrunk)?.vlanPolicy == .trunk(allowed: [10, 20], native: nil))

        // The VLAN-20 guest is up (answering) before the VLAN-10 guest starts probing it.
        let twenty = try QEMUGuest(GuestSpec(name: "a20", tap: tapTwenty, mac: macs.2, ip: "10.99.20.2/16", role: .idle), image: image)
        cleanup.add("kill VLAN-20 guest") { twenty.kill() }
        #expect(try twenty.waitForReady(timeout: .seconds(180)).contains("if=eth0 "))
        // The VLAN-10 guest probes the VLAN-20 guest on its own subnet, then stays up for the trunk's pings.
        var tenSpec = GuestSpec(name: "a10", tap: tapTen, mac: macs.1, ip: "10.99.10.2/16", role: .noPing(peers: ["10.99.20.2"]))
        tenSpec.peerWait = 10
        tenSpec.linger = true
        let ten = try QEMUGuest(tenSpec, image: image)
        cleanup.add("kill VLAN-10 guest") { ten.kill() }
        var trunkSpec = GuestSpec(name: "trk", tap: tapTrunk, mac: macs.0, ip: "", role: .ping(peers: ["10.99.10.2", "10.99.20.2"], count: 3))
        trunkSpec.vlans = [VLANInterface(vlan: 10, ip: "10.99.10.1/24"), VLANInterface(vlan: 20, ip: "10.99.20.1/24")]
        trunkSpec.peerWait = 120
        let trunk = try QEMUGuest(trunkSpec, image: image)
        cleanup.add("kill trunk guest") { trunk.kill() }
        #expect(try trunk.waitForReady(timeout: .seconds(180)).contains("if=eth0.10,eth0.20 "))

        // Positive controls: the trunk reaches the VLAN-10 guest through eth0.10 and the VLAN-20
        // guest through eth0.20 (both answer, both subinterfaces carry their VLAN).
        let reached = try trunk.waitForResults(count: 2, timeout: .seconds(360))
        for (result, peer) in zip(reached, ["10.99.10.2", "10.99.20.2"]) {
            #expect(result.kind == "ping" && result.ok && result.value("peer") == peer,
                    "\(result.line)\n\(trunk.serialLog)\n\(ten.serialLog)\n\(twenty.serialLog)\n\(log())")
        }
        // And not across: the VLAN-10 guest's ARP requests for the VLAN-20 guest reach nothing.
        let apart = try ten.waitForResult(timeout: .seconds(240))
        #expect(apart.kind == "noping" && apart.ok, "\(apart.line)\n\(ten.serialLog)\n\(log())")
        let tenPort = try #require(try daemon.port(named: tapTen))
        #expect(tenPort.counters.framesIn > 0, "VLAN 10's frames entered the switch: \(tenPort)")
        #expect(twenty.isRunning, "the VLAN-20 guest stayed up through the probe")
    }
}

extension DaemonUnderTest {
    /// `tapswitchctl vm start VM --nic TAP,mac=MAC[,vlan=N][,SETTINGS]` for one NIC; registers the TAP's
    /// deletion as a fallback in `cleanup`.
    fileprivate func startVM(_ vm: String, tap: String, mac: String, vlan: Int? = nil, settings: String? = nil, cleanup: Cleanup) throws {
        cleanup.deleteLink(tap)
        var nic = "\(tap),mac=\(mac)"
        if let vlan { nic += ",vlan=\(vlan)" }
        if let settings { nic += "," + settings }
        _ = try json([PortInfo].self, "vm", "start", vm, "--nic", nic)
    }

    fileprivate func stopVM(_ vm: String) throws {
        _ = try json([String: String].self, "vm", "stop", vm)
    }
}
