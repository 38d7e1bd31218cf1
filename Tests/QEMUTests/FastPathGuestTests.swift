import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Real QEMU guests with QEMU's default virtio offloads (TSO superframes, partial checksums) on a
/// `tapswitchd` with the fast path on (the shipped config): their TCP crosses on the fast path
/// (native XDP and the tcx skb path), and a guest that validates every checksum itself (offloads
/// off) still receives a working TCP stream from a guest that sends superframes.
@Suite("QEMU guests on the fast path", .serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct FastPathGuestTests {
    /// "fast-path frames: N in, M out" from a port's `offload` description.
    static func fastFrames(_ port: PortInfo) -> (in: UInt64, out: UInt64)? {
        guard let text = port.offload, let r = text.range(of: "fast-path frames: ") else { return nil }
        let words = text[r.upperBound...].split(whereSeparator: { $0 == " " || $0 == "," })
        guard words.count >= 3, let i = UInt64(words[0]), let o = UInt64(words[2]) else { return nil }
        return (i, o)
    }

    @Test("iperf3 TCP between guests with default offloads takes the fast path; a checksum-validating receiver gets valid segments")
    func tcpOnTheFastPath() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let (tapA, tapB) = (names.name("fa"), names.name("fb"))
        let (macA, macB) = (GuestSpec.randomMAC(), GuestSpec.randomMAC())
        for (vm, tap, mac) in [("fp-a", tapA, macA), ("fp-b", tapB, macB)] {
            cleanup.deleteLink(tap)
            _ = try daemon.json([PortInfo].self, "vm", "start", vm, "--nic", "\(tap),mac=\(mac)")
        }
        let log = { daemon.log }

        // The server without offloads validates every checksum in its own stack: the client's
        // superframes reach it segmented, their checksums completed by the kernel.
        for serverOffloads in [true, false] {
            var serverSpec = GuestSpec(name: "fs\(serverOffloads ? 1 : 0)", tap: tapA, mac: macA, ip: "10.99.3.1/24",
                                       role: .iperfServer(limit: 90))
            serverSpec.offloads = serverOffloads
            let server = try QEMUGuest(serverSpec, image: image)
            let client = try QEMUGuest(GuestSpec(name: "fc\(serverOffloads ? 1 : 0)", tap: tapB, mac: macB, ip: "10.99.3.2/24",
                                                 role: .iperfClient(server: "10.99.3.1", seconds: 3)), image: image)
            cleanup.add("kill fast-path guests") { server.kill(); client.kill() }
            let startB = try #require(try daemon.port(named: tapB))
            let startFast = Self.fastFrames(startB) ?? (0, 0)
            let tcp = try client.waitForResult(timeout: .seconds(150))
            #expect(tcp.kind == "tcp" && tcp.ok && (tcp.bitsPerSecond ?? 0) > 1_000_000,
                    "server offloads \(serverOffloads): \(tcp.line)\n\(client.serialLog)\n\(server.serialLog)\n\(log())")
            if tcp.ok {
                let served = try server.waitForResult(timeout: .seconds(30))
                #expect(served.ok, "\(served.line)\n\(server.serialLog)\n\(log())")
            }
            let portB = try #require(try daemon.port(named: tapB))
            let fast = try #require(Self.fastFrames(portB), "\(portB.offload ?? "nil")")
            let framesIn = portB.counters.framesIn - startB.counters.framesIn, fastIn = fast.in - startFast.in
            // Only the first frames of each direction (ARP, the handshake) go through the switch.
            #expect(framesIn > 100 && fastIn * 10 >= framesIn * 9,
                    "server offloads \(serverOffloads): \(fastIn) of \(framesIn) client frames on the fast path\n\(log())")
            print("QEMU TCP through tapswitchd's fast path (server offloads \(serverOffloads ? "on" : "off")): "
                  + "\(Int((tcp.bitsPerSecond ?? 0) / 1_000_000)) Mbit/s, \(fastIn) of \(framesIn) client frames on the fast path")
            server.kill()
            client.kill()
            try server.waitForExit(timeout: .seconds(30))
            try client.waitForExit(timeout: .seconds(30))
        }
    }
}
