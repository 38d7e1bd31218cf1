import ControlProtocol
import FakeVM
import Foundation
import Pcapng
import Testing
import TestSupport

/// `tapswitchctl capture` against the real `tapswitchd` on real TAPs with ``FakeVM``s attached, read
/// back with tcpdump and tshark (installed by scripts/install-deps).
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct CaptureDeviceTests {
    static let macA = "52:54:00:d1:00:0a"
    static let macB = "52:54:00:d1:00:0b"

    struct Pair {
        let a: GuestNIC
        let b: GuestNIC
        let tapA: String
        let tapB: String
    }

    func startPair(_ d: DaemonUnderTest, cleanup: Cleanup) async throws -> Pair {
        let names = UniqueNames()
        let tapA = names.name("ca")
        let tapB = names.name("cb")
        cleanup.deleteLink(tapA)
        cleanup.deleteLink(tapB)
        for (vm, tap, mac) in [("ca", tapA, Self.macA), ("cb", tapB, Self.macB)] {
            let r = try await d.ctl("vm", "start", vm, "--nic", "\(tap),mac=\(mac)")
            try #require(r.status == 0, "vm start \(vm): \(r.stderr)")
        }
        let a = try GuestNIC(tap: tapA, mac: Self.macA)
        let b = try GuestNIC(tap: tapB, mac: Self.macB)
        cleanup.add("detach FakeVMs") {
            a.close()
            b.close()
        }
        try await d.waitForEvents("nic-connect on both") { evs in
            [tapA, tapB].allSatisfy { tap in evs.contains { $0.kind == .nicConnect && $0.portName == tap } }
        }
        return Pair(a: a, b: b, tapA: tapA, tapB: tapB)
    }

    /// Starts `tapswitchctl capture ARGS` in the background and waits until the daemon runs the session.
    func startCapture(_ d: DaemonUnderTest, _ args: [String], cleanup: Cleanup) async throws -> ChildProcess {
        let before = d.log.components(separatedBy: "capture started").count
        let p = ChildProcess()
        p.executableURL = URL(fileURLWithPath: try Products.path("tapswitchctl"))
        p.arguments = ["--socket", d.socket, "capture"] + args
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        cleanup.add("stop tapswitchctl capture") { if p.isRunning { p.terminate() } }
        try await offPool {
            try waitUntil("the daemon runs the capture session", timeout: .seconds(10)) {
                d.log.components(separatedBy: "capture started").count > before
            }
        }
        return p
    }

    func waitExit(_ p: ChildProcess, _ what: String) async throws {
        try await offPool { try waitUntil(what, timeout: .seconds(15)) { !p.isRunning } }
        #expect(p.terminationStatus == 0, "\(what): exit status \(p.terminationStatus)")
    }

    /// Request from A to B, answer from B to A, `rounds` times; each crossing is confirmed.
    func ping(_ pair: Pair, rounds: Int, token: UInt32) async throws {
        try await offPool {
            for seq in 0..<UInt32(rounds) {
                try pair.a.send(Probe.frame(dst: pair.b.mac, src: pair.a.mac, token: token, seq: 2 * seq))
                let req = try pair.b.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token }
                try #require(req != nil, "request \(seq) did not reach B")
                try pair.b.send(Probe.frame(dst: pair.a.mac, src: pair.b.mac, token: token, seq: 2 * seq + 1))
                let rep = try pair.a.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token }
                try #require(rep != nil, "answer \(seq) did not reach A")
            }
        }
    }

    @Test("capture -w FILE records both directions of a ping in order; tcpdump -r and tshark read it")
    func pingBothDirections() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let pair = try await startPair(d, cleanup: cleanup)
        try await ping(pair, rounds: 1, token: 1)  // both MACs learned: what follows is unicast

        let file = d.dir.file("ping.pcapng")
        let p = try await startCapture(d, [pair.tapA, "-c", "6", "-w", file], cleanup: cleanup)
        try await ping(pair, rounds: 3, token: 0xC0FFEE)
        try await waitExit(p, "capture -c 6")

        let tcpdump = try await offPool { try Shell.run(["tcpdump", "-nn", "-e", "-r", file]) }
        #expect(tcpdump.status == 0, "tcpdump: \(tcpdump.stderr)")
        // One line per frame (an unknown EtherType's payload follows as indented hex lines).
        let lines = tcpdump.stdout.split(separator: "\n").map(String.init).filter { $0.first?.isWhitespace == false }
        #expect(lines.count == 6, "\(tcpdump.stdout)")
        // In order: A's request (in), B's answer delivered to A (out), three times.
        let sources = lines.map { $0.contains("\(Self.macA) > \(Self.macB)") ? "A" : $0.contains("\(Self.macB) > \(Self.macA)") ? "B" : "?" }
        #expect(sources == ["A", "B", "A", "B", "A", "B"], "\(tcpdump.stdout)")

        let tshark = try await offPool {
            try Shell.run(["tshark", "-r", file, "-T", "fields", "-e", "frame.interface_name", "-e", "eth.src"], timeout: .seconds(60))
        }
        #expect(tshark.status == 0, "tshark: \(tshark.stderr)")
        #expect(tshark.stdout.split(separator: "\n").map(String.init)
                == (0..<3).flatMap { _ in ["\(pair.tapA)-in\t\(Self.macA)", "\(pair.tapA)-out\t\(Self.macB)"] }, "\(tshark.stdout)")

        // Our own reader: the sequence numbers in order, ns timestamps rising, the statistics at the end.
        let blocks = try Pcapng.read(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
        let packets = blocks.compactMap(\.packet)
        #expect(packets.compactMap { Probe.parse($0.data)?.seq } == [0, 1, 2, 3, 4, 5])
        #expect(zip(packets, packets.dropFirst()).allSatisfy { $0.timestamp <= $1.timestamp })
        #expect(blocks.compactMap(\.statistics).map(\.dropped) == [0, 0])
    }

    @Test("capture -w and nic save --output write into a device node as it is, never replace it (capture -w /dev/null replaced /dev/null with a regular file)")
    func outputToADeviceNode() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let pair = try await startPair(d, cleanup: cleanup)
        try await ping(pair, rounds: 1, token: 1)
        // A null device of the test's own (same major/minor as /dev/null), so a regression cannot break the host's.
        let node = d.dir.file("null")
        #expect(mknod(node, S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0, "mknod: \(errno)")
        func isCharDevice() -> Bool {
            var st = stat()
            return lstat(node, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR
        }
        let p = try await startCapture(d, [pair.tapA, "-c", "2", "-w", node], cleanup: cleanup)
        try await ping(pair, rounds: 1, token: 0xD0)
        try await waitExit(p, "capture -c 2 -w NODE")
        #expect(isCharDevice(), "capture -w replaced the device node")
        let saved = try await d.ctl("nic", "save", pair.tapA, "--output", node)
        #expect(saved.status == 0, "\(saved.stderr)")
        #expect(isCharDevice(), "nic save --output replaced the device node")
        // Positive control: a regular file gets the capture.
        let file = d.dir.file("regular.pcapng")
        let q = try await startCapture(d, [pair.tapA, "-c", "2", "-w", file], cleanup: cleanup)
        try await ping(pair, rounds: 1, token: 0xD1)
        try await waitExit(q, "capture -c 2 -w FILE")
        #expect(((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int ?? 0) > 0)
    }

    @Test("capture --drops shows a VLAN-hop frame with its reason; the good frame after it is captured too")
    func dropsWithReason() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let pair = try await startPair(d, cleanup: cleanup)

        let file = d.dir.file("drops.pcapng")
        let p = try await startCapture(d, [pair.tapA, "--drops", "--direction", "in", "-c", "2", "-w", file], cleanup: cleanup)
        try await offPool {
            // A VLAN-20 tagged frame from an untagged port: the double-tagging hop's first step, dropped.
            try pair.a.send(TestFrames.ethernet(dst: TestFrames.broadcastMAC, src: pair.a.mac, etherType: 0x88b5, vlan: 20,
                                                payload: Probe.magic + [0, 0, 0, 7, 0, 0, 0, 0]))
            try pair.a.send(Probe.frame(dst: TestFrames.broadcastMAC, src: pair.a.mac, token: 8, seq: 0))
            let good = try pair.b.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == 8 }
            try #require(good != nil, "the good broadcast did not reach B")
        }
        try await waitExit(p, "capture --drops -c 2")

        let tshark = try await offPool { try Shell.run(["tshark", "-r", file, "-V"], timeout: .seconds(60)) }
        #expect(tshark.status == 0, "tshark: \(tshark.stderr)")
        #expect(tshark.stdout.contains("dropped: VLAN not allowed on port, by switch"), "\(tshark.stdout)")
        let tcpdump = try await offPool { try Shell.run(["tcpdump", "-nn", "-e", "-r", file]) }
        let lines = tcpdump.stdout.split(separator: "\n").filter { $0.first?.isWhitespace == false }
        #expect(lines.count == 2, "\(tcpdump.stdout)")
        #expect(lines.first?.contains("vlan 20") == true, "\(tcpdump.stdout)")
        let packets = try Pcapng.read(Array(try Data(contentsOf: URL(fileURLWithPath: file)))).compactMap(\.packet)
        #expect(packets.map(\.dropped) == [true, false])
        #expect(packets.map(\.direction) == [.inbound, .inbound])
    }

    @Test("capture -w - pipes into tcpdump -r - live; an unknown port is refused naming it")
    func pipeIntoTcpdump() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let pair = try await startPair(d, cleanup: cleanup)

        let bad = try await d.ctl("capture", "nosuchport0", "-w", d.dir.file("x.pcapng"))
        #expect(bad.status == 1 && bad.stderr.contains("nosuchport0"), "\(bad)")

        let out = d.dir.file("tcpdump.txt")
        guard FileManager.default.createFile(atPath: out, contents: nil) else { throw TestHelperError("cannot create \(out)") }
        let before = d.log.components(separatedBy: "capture started").count
        // tapswitchctl capture ... -w - | tcpdump -r -
        let pipe = Pipe()
        let ctl = ChildProcess()
        ctl.executableURL = URL(fileURLWithPath: try Products.path("tapswitchctl"))
        ctl.arguments = ["--socket", d.socket, "capture", pair.tapB, "--direction", "out", "-w", "-"]
        ctl.standardOutput = pipe
        ctl.standardError = FileHandle(forWritingAtPath: "/dev/null")
        let tcpdump = ChildProcess()
        tcpdump.executableURL = URL(fileURLWithPath: "/usr/bin/tcpdump")
        tcpdump.arguments = ["-nn", "-e", "-l", "-r", "-"]
        tcpdump.standardInput = pipe
        tcpdump.standardOutput = FileHandle(forWritingAtPath: out)
        tcpdump.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try tcpdump.run()
        cleanup.add("stop tcpdump") { if tcpdump.isRunning { tcpdump.terminate() } }
        try ctl.run()
        cleanup.add("stop tapswitchctl capture") { if ctl.isRunning { ctl.terminate() } }
        try? pipe.fileHandleForReading.close()
        try? pipe.fileHandleForWriting.close()
        try await offPool {
            try waitUntil("the daemon runs the capture session", timeout: .seconds(10)) {
                d.log.components(separatedBy: "capture started").count > before
            }
        }
        let token: UInt32 = 0xAB_CDEF
        try await offPool {
            try pair.a.send(Probe.frame(dst: TestFrames.broadcastMAC, src: pair.a.mac, token: token, seq: 0))
            _ = try pair.b.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token }
            // tcpdump prints the frame while the capture still runs: the stream is live.
            try waitUntil("tcpdump prints the frame delivered to B", timeout: .seconds(10)) {
                ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("\(Self.macA) > ff:ff:ff:ff:ff:ff")
            }
        }
        #expect(ctl.isRunning, "the capture runs until interrupted")
        // Ctrl-C the capture: it ends cleanly, tcpdump sees the end of the stream and exits too.
        ctl.interrupt()
        try await offPool { try waitUntil("the capture and tcpdump end after SIGINT", timeout: .seconds(10)) { !ctl.isRunning && !tcpdump.isRunning } }
        #expect(ctl.terminationStatus == 0 && tcpdump.terminationStatus == 0)
        #expect(d.log.contains("capture stopped"), "\(d.log)")
    }
}
