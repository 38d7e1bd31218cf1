import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `[switch] transmit` on real TAPs with ``FakeVM``s: what `tcpdump -i TAP` sees of the frames the
/// switch delivers to a VM, with `bypass` (nothing: the qdisc and its packet taps are skipped) and
/// with `qdisc` (each one), switched by SIGHUP; `show` names the mode.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct TransmitPathTests {
    static let macs = ["52:54:00:d2:00:0a", "52:54:00:d2:00:0b", "52:54:00:d2:00:0c"]
    static let frames = 5

    /// The shipped config with `transmit` set, and the fast path off: frames the XDP fast path
    /// redirects are invisible to tcpdump in either mode, which is not what this test is about.
    static func config(transmit: String) throws -> String {
        let shipped = try String(contentsOfFile: Products.repositoryRoot + "/config/tapswitchd.toml", encoding: .utf8)
        var lines = shipped.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let t = lines.firstIndex { $0.hasPrefix("transmit = ") }, o = lines.firstIndex { $0.hasPrefix("offload = ") }
        guard let t, let o else { throw TestHelperError("the shipped config has no transmit or offload line") }
        lines[t] = "transmit = \"\(transmit)\""
        lines[o] = "offload = \"off\""
        return lines.joined(separator: "\n")
    }

    func startVM(_ d: DaemonUnderTest, _ name: String, tap: String, mac: String, cleanup: Cleanup) async throws -> GuestNIC {
        cleanup.deleteLink(tap)
        let r = try await d.ctl("vm", "start", name, "--nic", "\(tap),mac=\(mac)")
        try #require(r.status == 0, "vm start \(name): \(r.stderr)")
        let nic = try GuestNIC(tap: tap, mac: mac)
        cleanup.add("detach FakeVM \(tap)") { nic.close() }
        _ = try await d.waitForEvents(.nicConnect, port: tap)
        return nic
    }

    /// Runs `tcpdump -i TO.tap` while `from` sends ``frames`` probes to `to` (each confirmed
    /// delivered) and then `to` answers once (the positive control: tcpdump sees what the VM sends
    /// in every mode). Returns how many of the delivered probes tcpdump printed, read once the
    /// answer's line is there.
    func delivered(from: GuestNIC, to: GuestNIC, seenBy d: DaemonUnderTest, token: UInt32, cleanup: Cleanup) async throws -> Int {
        let out = d.dir.file("tcpdump-\(token).txt"), err = d.dir.file("tcpdump-\(token).err")
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        let p = ChildProcess()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["tcpdump", "-i", to.tap, "-nn", "-e", "-l", "--immediate-mode", "ether proto 0x88b5"]
        p.standardOutput = FileHandle(forWritingAtPath: out)
        p.standardError = FileHandle(forWritingAtPath: err)
        try p.run()
        cleanup.add("stop tcpdump on \(to.tap)") { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let fromMAC = TestFrames.formatMAC(from.mac), toMAC = TestFrames.formatMAC(to.mac)
        let lines = try await offPool { () throws -> [String] in
            try waitUntil("tcpdump listens on \(to.tap)", timeout: .seconds(10)) { Self.text(err).contains("listening on") }
            for seq in 0..<UInt32(Self.frames) {
                try from.send(Probe.frame(dst: to.mac, src: from.mac, token: token, seq: seq))
                let got = try to.receive(timeout: .seconds(3)) { Probe.parse($0).map { $0 == (token, seq) } ?? false }
                try #require(got != nil, "probe \(seq) was not delivered to \(to.tap)")
            }
            try to.send(Probe.frame(dst: from.mac, src: to.mac, token: token, seq: 99))
            let answer = try from.receive(timeout: .seconds(3)) { Probe.parse($0).map { $0 == (token, 99) } ?? false }
            try #require(answer != nil, "the answer from \(to.tap) was not delivered")
            // Lines of frames only (an unknown EtherType's payload follows as indented hex lines).
            func frameLines() -> [String] {
                Self.text(out).split(separator: "\n").map(String.init).filter { $0.first?.isWhitespace == false }
            }
            try waitUntil("tcpdump on \(to.tap) prints the answer \(toMAC) > \(fromMAC) (positive control)", timeout: .seconds(10)) {
                frameLines().contains { $0.contains("\(toMAC) > \(fromMAC)") }
            }
            // SIGKILL: in immediate mode tcpdump waits for one more frame before it acts on SIGTERM;
            // its output is line-buffered (-l), so nothing printed is lost.
            kill(p.processIdentifier, SIGKILL)
            try waitUntil("tcpdump exits", timeout: .seconds(10)) { !p.isRunning }
            return frameLines()
        }
        return lines.filter { $0.contains("\(fromMAC) > \(toMAC)") }.count
    }

    static func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    func reload(_ d: DaemonUnderTest, transmit: String) async throws {
        let before = d.logText.components(separatedBy: "config reloaded").count
        try Self.config(transmit: transmit).write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        try await offPool {
            try waitUntil("SIGHUP reloads the config", timeout: .seconds(10)) {
                d.logText.components(separatedBy: "config reloaded").count > before
            }
        }
    }

    @Test("tcpdump -i TAP sees the frames the switch delivers with transmit = qdisc, not with bypass; SIGHUP switches; show names the mode")
    func tcpdumpSeesDeliveredFramesWithQdisc() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .text(try Self.config(transmit: "bypass")), cleanup: cleanup)
        try await d.start()
        let names = UniqueNames()
        let a = try await startVM(d, "ta", tap: names.name("ta"), mac: Self.macs[0], cleanup: cleanup)
        let b = try await startVM(d, "tb", tap: names.name("tb"), mac: Self.macs[1], cleanup: cleanup)

        #expect(try await d.show().settings.transmit == .bypass)
        #expect(try await d.ctl("show").stdout.contains("transmit=bypass"))
        #expect(try await delivered(from: a, to: b, seenBy: d, token: 1, cleanup: cleanup) == 0,
                "bypass: tcpdump -i \(b.tap) sees none of the frames delivered to it")

        // SIGHUP applies it to the running ports, and to ports plugged in afterwards.
        try await reload(d, transmit: "qdisc")
        #expect(d.logText.contains("transmit qdisc:"), "\(d.log)")
        #expect(try await d.show().settings.transmit == .qdisc)
        #expect(try await d.ctl("show").stdout.contains("transmit=qdisc"))
        #expect(try await delivered(from: a, to: b, seenBy: d, token: 2, cleanup: cleanup) == Self.frames,
                "qdisc: tcpdump -i \(b.tap) sees every frame delivered to it")
        let c = try await startVM(d, "tc", tap: names.name("tc"), mac: Self.macs[2], cleanup: cleanup)
        #expect(try await delivered(from: a, to: c, seenBy: d, token: 3, cleanup: cleanup) == Self.frames,
                "qdisc: a port created after the reload sends through the qdisc too")

        try await reload(d, transmit: "bypass")
        #expect(try await d.ctl("show").stdout.contains("transmit=bypass"))
        #expect(try await delivered(from: a, to: c, seenBy: d, token: 4, cleanup: cleanup) == 0, "back to bypass")
    }

    @Test("transmit = qdisc from the start: tcpdump -i TAP sees the delivered frames")
    func qdiscFromTheStart() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .text(try Self.config(transmit: "qdisc")), cleanup: cleanup)
        try await d.start()
        let names = UniqueNames()
        let a = try await startVM(d, "ta", tap: names.name("ta"), mac: Self.macs[0], cleanup: cleanup)
        let b = try await startVM(d, "tb", tap: names.name("tb"), mac: Self.macs[1], cleanup: cleanup)
        #expect(try await d.show().settings.transmit == .qdisc)
        #expect(try await delivered(from: a, to: b, seenBy: d, token: 5, cleanup: cleanup) == Self.frames)
    }
}
