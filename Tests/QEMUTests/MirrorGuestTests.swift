import ControlProtocol
import Foundation
import Testing
import TestSupport

/// Port mirroring with real QEMU guests: guest A's port is mirrored (both directions) to an internal
/// port on which the host runs tcpdump, as an operator would point an analyser at a mirror: first a
/// ping between the guests, then an iperf3 flow.
@Suite("Port mirroring with QEMU guests", .serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct MirrorGuestTests {
    @Test func pingAndIperf3BetweenGuestsAreMirroredInBothDirections() throws {
        try Privilege.requireNetAdmin()
        let image = try GuestImage.locate()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let daemon = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try daemon.start()
        let (tapA, tapB, analyser) = (names.name("a"), names.name("b"), names.name("mi"))
        let (macA, macB) = (GuestSpec.randomMAC(), GuestSpec.randomMAC())
        for (vm, tap, mac) in [("mir-a", tapA, macA), ("mir-b", tapB, macB)] {
            cleanup.deleteLink(tap)
            _ = try daemon.json([PortInfo].self, "vm", "start", vm, "--nic", "\(tap),mac=\(mac)")
        }
        cleanup.deleteLink(analyser)
        let added = try daemon.ctl("port", "add-internal", analyser)
        try #require(added.status == 0, "port add-internal: \(added.stderr)")
        try Shell.run(["ip", "link", "set", analyser, "up"])
        let mirror = try daemon.ctl("mirror", "add", "guest-a", "--source", tapA, "--to", analyser)
        try #require(mirror.status == 0, "mirror add: \(mirror.stderr)")

        // tcpdump on the analyser port, listening before the guests boot.
        let dir = try TempDir("mirror")
        cleanup.add("remove the capture directory") { dir.remove() }
        let pcap = dir.path + "/mirror.pcap", errFile = dir.path + "/tcpdump.err"
        _ = FileManager.default.createFile(atPath: errFile, contents: nil)
        let tcpdump = ChildProcess()
        tcpdump.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tcpdump.arguments = ["tcpdump", "-i", analyser, "-nn", "-U", "-w", pcap, "icmp"]
        tcpdump.standardOutput = FileHandle.nullDevice
        tcpdump.standardError = FileHandle(forWritingAtPath: errFile)
        try tcpdump.run()
        cleanup.add("stop tcpdump") { if tcpdump.isRunning { tcpdump.terminate() } }
        try waitUntil("tcpdump listening on \(analyser)", timeout: .seconds(10)) {
            ((try? String(contentsOfFile: errFile, encoding: .utf8)) ?? "").contains("listening on")
        }

        var specA = GuestSpec(name: "ma", tap: tapA, mac: macA, ip: "10.99.7.1/24", role: .ping(peers: ["10.99.7.2"], count: 3))
        var specB = GuestSpec(name: "mb", tap: tapB, mac: macB, ip: "10.99.7.2/24", role: .ping(peers: ["10.99.7.1"], count: 3))
        specA.peerWait = 20
        specB.peerWait = 20
        specA.linger = true
        specB.linger = true
        let guestA = try QEMUGuest(specA, image: image)
        let guestB = try QEMUGuest(specB, image: image)
        cleanup.add("kill ping guests") { guestA.kill(); guestB.kill() }
        for (guest, peer) in [(guestA, "10.99.7.2"), (guestB, "10.99.7.1")] {
            let result = try guest.waitForResult()
            #expect(result.kind == "ping" && result.ok && result.value("received") == "3" && result.value("peer") == peer,
                    "\(guest.spec.name): \(result.line)\n\(guest.serialLog)\n\(daemon.log)")
        }
        guestA.kill()
        guestB.kill()

        // Every echo request and reply crossing A's port, in both directions, reached the analyser.
        let m = try #require(try daemon.json([MirrorInfo].self, "mirror", "list").first)
        try waitUntil("tcpdump wrote the copies", timeout: .seconds(10)) {
            let r = try Shell.run(["tcpdump", "-nn", "-r", pcap])
            return r.stdout.split(separator: "\n").count >= 12
        }
        tcpdump.interrupt()
        tcpdump.waitUntilExit()
        let lines = try Shell.run(["tcpdump", "-nn", "-r", pcap]).stdout.split(separator: "\n").map(String.init)
        func count(_ from: String, _ to: String, _ kind: String) -> Int {
            lines.filter { $0.contains("IP \(from) > \(to): ICMP echo \(kind)") }.count
        }
        for (from, to, kind) in [("10.99.7.1", "10.99.7.2", "request"), ("10.99.7.2", "10.99.7.1", "reply"),
                                 ("10.99.7.2", "10.99.7.1", "request"), ("10.99.7.1", "10.99.7.2", "reply")] {
            #expect(count(from, to, kind) >= 3, "\(from) > \(to) echo \(kind): \(lines.joined(separator: "\n"))")
        }
        #expect(m.active && m.frames >= 12 && m.drops == 0, "\(m)")

        // A's iperf3 flow (A serves, B sends) is mirrored too, both directions: B's data segments to A
        // and A's acknowledgements to B. Copies may be dropped for the analyser's capacity, so the check
        // is that both directions are there in numbers, not that every segment is.
        let tcpPcap = dir.path + "/mirror-tcp.pcap", tcpErr = dir.path + "/tcpdump-tcp.err"
        _ = FileManager.default.createFile(atPath: tcpErr, contents: nil)
        let tcpdumpTCP = ChildProcess()
        tcpdumpTCP.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tcpdumpTCP.arguments = ["tcpdump", "-i", analyser, "-nn", "-U", "-s", "128", "-w", tcpPcap, "tcp port 5201"]
        tcpdumpTCP.standardOutput = FileHandle.nullDevice
        tcpdumpTCP.standardError = FileHandle(forWritingAtPath: tcpErr)
        try tcpdumpTCP.run()
        cleanup.add("stop tcpdump (tcp)") { if tcpdumpTCP.isRunning { tcpdumpTCP.terminate() } }
        try waitUntil("tcpdump listening on \(analyser) for TCP", timeout: .seconds(10)) {
            ((try? String(contentsOfFile: tcpErr, encoding: .utf8)) ?? "").contains("listening on")
        }
        let server = try QEMUGuest(GuestSpec(name: "ms", tap: tapA, mac: macA, ip: "10.99.7.1/24", role: .iperfServer(limit: 90)), image: image)
        let client = try QEMUGuest(GuestSpec(name: "mc", tap: tapB, mac: macB, ip: "10.99.7.2/24",
                                             role: .iperfClient(server: "10.99.7.1", seconds: 3)), image: image)
        cleanup.add("kill iperf3 guests") { server.kill(); client.kill() }
        let tcp = try client.waitForResult(timeout: .seconds(150))
        #expect(tcp.kind == "tcp" && tcp.ok, "\(tcp.line)\n\(client.serialLog)\n\(server.serialLog)\n\(daemon.log)")
        server.kill()
        client.kill()
        func tcpLines() throws -> [String] {
            try Shell.run(["tcpdump", "-nn", "-r", tcpPcap]).stdout.split(separator: "\n").map(String.init)
        }
        let toServer = { (lines: [String]) in lines.filter { $0.contains("IP 10.99.7.2.") && $0.contains(" > 10.99.7.1.5201:") }.count }
        let toClient = { (lines: [String]) in lines.filter { $0.contains("IP 10.99.7.1.5201 > 10.99.7.2.") }.count }
        try waitUntil("tcpdump wrote the TCP copies", timeout: .seconds(10)) {
            let lines = try tcpLines()
            return toServer(lines) >= 20 && toClient(lines) >= 20
        }
        tcpdumpTCP.interrupt()
        tcpdumpTCP.waitUntilExit()
        let tcpCopies = try tcpLines()
        let after = try #require(try daemon.json([MirrorInfo].self, "mirror", "list").first)
        #expect(toServer(tcpCopies) >= 20 && toClient(tcpCopies) >= 20,
                "iperf3 copies: \(toServer(tcpCopies)) to the server, \(toClient(tcpCopies)) to the client\n\(after)")
        print("QEMU iperf3 mirrored to \(analyser): \(Int((tcp.bitsPerSecond ?? 0) / 1_000_000)) Mbit/s; "
              + "\(toServer(tcpCopies)) copies B->A, \(toClient(tcpCopies)) copies A->B; mirror frames \(after.frames), drops \(after.drops)")
    }
}
