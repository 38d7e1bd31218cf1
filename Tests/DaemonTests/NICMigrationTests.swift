import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// Extension state travelling with a migrated NIC (issue 17): `tapswitchctl nic save` on the source
/// host's daemon, `nic restore` on the destination's, with real daemons, TAPs and FakeVMs. The state is
/// ip-guard's DHCP-snooped lease: without it the destination's guard drops the VM's traffic from its
/// address; with it the traffic passes.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct NICMigrationTests {
    static let config = """
        [metrics]
        listen = ""
        [extensions]
        enable = ["ip-guard"]
        """
    static let leased: UInt32 = 0x0A00_004D  // 10.0.0.77
    static let vmMAC = "52:54:00:e7:00:01"
    static let serverMAC = "52:54:00:e7:00:09"

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

    static func udp4(dst: [UInt8], src: [UInt8], from: UInt32, to: UInt32, ports: (UInt16, UInt16), payload: [UInt8]) -> [UInt8] {
        let udp = be16(ports.0) + be16(ports.1) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        let ip: [UInt8] = [0x45, 0] + be16(UInt16(20 + udp.count)) + [0, 0, 0, 0, 64, 17, 0, 0] + be32(from) + be32(to)
        return TestFrames.ethernet(dst: dst, src: src, etherType: 0x0800, payload: ip + udp)
    }

    /// A DHCPACK from the server granting `address` (default `leased`) to `client` for 600 s.
    static func dhcpAck(client: [UInt8], server: [UInt8], address: UInt32 = leased) -> [UInt8] {
        var b: [UInt8] = [2, 1, 6, 0] + be32(0x1234) + [0, 0, 0, 0] + be32(0) + be32(address) + be32(0) + be32(0)
        b += client + Array(repeating: 0, count: 10 + 64 + 128)
        b += be32(0x6382_5363) + [53, 1, 5, 51, 4] + be32(600) + [255]
        return udp4(dst: client, src: server, from: 0x0A00_0001, to: address, ports: (67, 68), payload: b)
    }

    /// A UDP datagram from the leased address carrying `marker`.
    static func fromLease(_ vm: [UInt8], _ server: [UInt8], marker: [UInt8]) -> [UInt8] {
        udp4(dst: server, src: vm, from: leased, to: 0x0A00_0001, ports: (4000, 4001), payload: marker)
    }

    /// Whether a frame carrying `marker` reaches `nic` within `timeout`.
    static func arrives(_ nic: GuestNIC, _ marker: [UInt8], timeout: Duration) async throws -> Bool {
        try await offPool { try nic.receive(timeout: timeout) { $0.firstRange(of: marker) != nil } != nil }
    }

    /// `vm start` with one NIC and attach a FakeVM to it (waits for NIC_CONNECT).
    static func start(_ d: DaemonUnderTest, vm: String, tap: String, mac: String, settings: String, cleanup: Cleanup) async throws -> GuestNIC {
        cleanup.deleteLink(tap)
        let r = try await d.ctl("vm", "start", vm, "--nic", "\(tap),mac=\(mac)" + settings)
        try #require(r.status == 0, "vm start \(vm): \(r.stderr)\n\(d.log)")
        let nic = try GuestNIC(tap: tap, mac: mac)
        cleanup.add("detach \(tap)") { nic.close() }
        _ = try await d.waitForEvents(.nicConnect, port: tap)
        return nic
    }

    @Test("nic save on the source, nic restore on the destination: ip-guard's snooped lease moves with the NIC")
    func snoopedLeaseMovesWithTheNIC() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        let source = try DaemonUnderTest(config: .text(Self.config), cleanup: cleanup)
        let destination = try DaemonUnderTest(config: .text(Self.config), cleanup: cleanup)
        try await source.start()
        try await destination.start()
        let tap = n.name("mig"), server1 = n.name("srv1"), server2 = n.name("srv2")
        let guarded = ",ip-guard=on,dhcp-snooping=on"
        let vm = try await Self.start(source, vm: "mig", tap: tap, mac: Self.vmMAC, settings: guarded, cleanup: cleanup)
        let server = try await Self.start(source, vm: "srv1", tap: server1, mac: Self.serverMAC, settings: "", cleanup: cleanup)

        // On the source: the guard drops the address until the server's ACK for this NIC grants it.
        try vm.send(Self.fromLease(vm.mac, server.mac, marker: Array("before-ack".utf8)))
        #expect(try await !Self.arrives(server, Array("before-ack".utf8), timeout: .seconds(1)), "ip-guard let an unleased address through")
        try server.send(Self.dhcpAck(client: vm.mac, server: server.mac))
        #expect(try await Self.arrives(vm, [0x63, 0x82, 0x53, 0x63], timeout: .seconds(5)), "the ACK reached the VM")
        try vm.send(Self.fromLease(vm.mac, server.mac, marker: Array("after-ack".utf8)))
        #expect(try await Self.arrives(server, Array("after-ack".utf8), timeout: .seconds(5)), "the snooped lease lets the address through\n\(source.log)")

        // Save on the source while the port exists, then the VM leaves it.
        let file = source.dir.file("mig-nic.json")
        let saved = try await source.ctl("nic", "save", tap, "--output", file)
        #expect(saved.status == 0 && saved.stdout.contains("ip-guard"), "\(saved.stdout) \(saved.stderr)")
        let document = try JSONDecoder().decode(SavedNICDocument.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
        #expect(document.port == tap && document.nicStates.map(\.extensionName) == ["ip-guard"])
        vm.close()
        server.close()
        _ = try await source.waitForEvents(.nicDisconnect, port: tap)
        #expect(try await source.ctl("vm", "stop", "mig").status == 0)
        #expect(try await source.ctl("vm", "stop", "srv1", "--force").status == 0)

        // The destination: the same VM (same TAP name and MAC, a new port) without the state drops the address...
        let moved = try await Self.start(destination, vm: "mig", tap: tap, mac: Self.vmMAC, settings: guarded, cleanup: cleanup)
        let server2NIC = try await Self.start(destination, vm: "srv2", tap: server2, mac: Self.serverMAC, settings: "", cleanup: cleanup)
        try moved.send(Self.fromLease(moved.mac, server2NIC.mac, marker: Array("unrestored".utf8)))
        #expect(try await !Self.arrives(server2NIC, Array("unrestored".utf8), timeout: .seconds(1)),
                "the destination knew the lease before the restore")
        // ...and with it, lets it through.
        let restored = try await destination.ctl("nic", "restore", tap, file)
        #expect(restored.status == 0 && restored.stdout.contains("ip-guard"), "\(restored.stdout) \(restored.stderr)\n\(destination.log)")
        try moved.send(Self.fromLease(moved.mac, server2NIC.mac, marker: Array("restored".utf8)))
        #expect(try await Self.arrives(server2NIC, Array("restored".utf8), timeout: .seconds(5)),
                "the restored lease lets the address through on the destination\n\(destination.log)")
        let counters = try await destination.json([ExtensionInfo].self, "extensions").first { $0.name == "ip-guard" }?.counters ?? []
        #expect(counters.first { $0.name == "restored-leases" }?.value == 1, "\(counters)")

        // A blob for an extension the destination does not run is named, and the exit code says so.
        let bogus = source.dir.file("bogus.json")
        try Data(#"{"port": "x", "nicStates": [{"extension": "no-such-ext", "version": 1, "data": "AA=="}]}"#.utf8)
            .write(to: URL(fileURLWithPath: bogus))
        let refused = try await destination.ctl("nic", "restore", tap, bogus)
        #expect(refused.status == 1 && refused.stderr.contains("no-such-ext"), "\(refused.stdout) \(refused.stderr)")
        // No such port: a clear error.
        let missing = try await destination.ctl("nic", "save", n.name("none"))
        #expect(missing.status == 1 && missing.stderr.contains("no port named"), "\(missing.stderr)")
    }
}
