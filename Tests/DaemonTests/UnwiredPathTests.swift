import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The paths issue 10 found wired nowhere or dangerous, on real TAPs through the real daemon:
/// a TAP deleted by hand, re-adoption with a vetoed NIC, SIGHUP's extension list, and `vm stop`
/// under an attached guest.
@Suite("Unwired and dangerous paths (issue 10)", .serialized, .heavy)
struct UnwiredPathTests {
    static let macA = "52:54:00:d1:00:0a"
    static let macB = "52:54:00:d1:00:0b"

    func probe(from src: String, token: UInt32) -> [UInt8] {
        Probe.frame(dst: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], src: TestFrames.parseMAC(src)!, token: token, seq: 1)
    }

    /// `nic` receives a probe with `token` within 5 s (other frames are skipped).
    func receives(_ nic: GuestNIC, token: UInt32) async throws -> Bool {
        try await offPool { try nic.receive(timeout: .seconds(5)) { Probe.parse($0)?.token == token } != nil }
    }

    func stateText(_ d: DaemonUnderTest) -> String {
        (try? String(contentsOfFile: d.stateDir + "/state.json", encoding: .utf8)) ?? ""
    }

    @Test("a TAP deleted by hand: the stop sequence runs, the VM leaves show and state.json, and vm start works again")
    func tapDeletedByHand() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let tap = names.name("x0")
        cleanup.deleteLink(tap)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let start = try await d.ctl("vm", "start", "lost", "--nic", tap, "--mac", Self.macA)
        try #require(start.status == 0, "vm start: \(start.stderr)")
        #expect(stateText(d).contains(tap), "recorded: \(stateText(d))")

        let del = try await offPool { try Shell.run(["ip", "link", "del", "dev", tap]) }
        try #require(del.status == 0, "ip link del: \(del.stderr)")
        _ = try await d.waitForEvents(.portDelete, port: tap)
        try await offPool {
            try waitUntil("state.json forgets VM 'lost'", timeout: .seconds(10)) { !self.stateText(d).contains("\"lost\"") }
        }
        #expect(try await d.show().ports.isEmpty)
        let again = try await d.ctl("vm", "start", "lost", "--nic", tap, "--mac", Self.macA)
        #expect(again.status == 0, "vm start after the TAP vanished: \(again.stderr)\n\(d.log)")
        #expect(try await linkExists(tap))
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    @Test("restore with a vetoed second NIC: the first NIC's TAP stays, its guest keeps forwarding, the VM stays recorded")
    func restoreWithVetoedSecondNIC() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let (other, first, second) = (names.name("o0"), names.name("v0"), names.name("v1"))
        for t in [other, first, second] { cleanup.deleteLink(t) }
        // QEMU holds `first` across the daemon restart.
        let mk = try await offPool { try Shell.run(["ip", "tuntap", "add", "dev", first, "mode", "tap"]) }
        try #require(mk.status == 0, "ip tuntap add: \(mk.stderr)")
        let guest = try GuestNIC(tap: first, mac: Self.macA)
        cleanup.add("detach \(first)") { guest.close() }

        // The previous run recorded VM "ro" (MAC B) and VM "rv" with a second NIC that also has MAC B:
        // re-adopted in that order, duplicate-mac-guard vetoes rv's second NIC.
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try FileManager.default.createDirectory(atPath: d.stateDir, withIntermediateDirectories: true)
        let state = """
            {"version":1,"records":{"vms":[
              {"name":"ro","nics":[{"tap":"\(other)","mac":"\(Self.macB)","type":"synthetic"}]},
              {"name":"rv","nics":[{"tap":"\(first)","mac":"\(Self.macA)","type":"synthetic"},
                                   {"tap":"\(second)","mac":"\(Self.macB)","type":"synthetic"}]}
            ],"internalPorts":[],"externalPorts":[]}}
            """
        try state.write(toFile: d.stateDir + "/state.json", atomically: true, encoding: .utf8)
        try await d.start()

        let vetoes = try await d.events().filter { $0.kind == .veto }
        #expect(vetoes.contains { $0.portName == second && ($0.detail ?? "").contains("duplicate-mac-guard") }, "\(vetoes.map(\.summary))")
        #expect(try await linkExists(first), "re-adoption must not delete the TAP QEMU holds")
        #expect(try await d.port(named: first)?.nic?.state == .connected, "\(d.log)")
        #expect(stateText(d).contains("\"rv\"") && stateText(d).contains(second), "VM rv stays recorded with both NICs: \(stateText(d))")

        // The guest's fd still works: its broadcast reaches a guest on the other VM.
        let peer = try GuestNIC(tap: other, mac: Self.macB)
        cleanup.add("detach \(other)") { peer.close() }
        _ = try await d.waitForEvents(.nicConnect, port: other)
        try guest.send(probe(from: Self.macA, token: 0x7e57_0001))
        #expect(try await receives(peer, token: 0x7e57_0001), "a frame from the re-adopted NIC crossed the switch")

        guest.close()
        peer.close()
        _ = try await d.waitForEvents(.nicDisconnect, port: first)
        _ = try await d.waitForEvents(.nicDisconnect, port: other)
        let stop = try await d.ctl("vm", "stop", "rv")
        #expect(stop.status == 0, "vm stop rv: \(stop.stderr)")
        #expect(try await !linkExists(first), "vm stop removes every TAP of the record")
        #expect(try await !linkExists(second), "vm stop removes every TAP of the record")
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    static func config(extensions: [String]) -> String {
        "[extensions]\nenable = [" + extensions.map { "\"\($0)\"" }.joined(separator: ", ") + "]\n"
    }

    @Test("SIGHUP applies the extension list: a removed extension stops acting, a re-added one acts again, in listed order")
    func sighupAppliesExtensionList() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let (a, b, c) = (names.name("a0"), names.name("b0"), names.name("c0"))
        for t in [a, b, c] { cleanup.deleteLink(t) }
        let full = ["duplicate-mac-guard", "mac-spoof-guard", "mac-limit"]
        let d = try DaemonUnderTest(config: .text(Self.config(extensions: full)), cleanup: cleanup)
        try await d.start()

        func enabled() async throws -> [String: Int?] {
            let list = try await d.json([ExtensionInfo].self, "extensions")
            return Dictionary(uniqueKeysWithValues: list.filter(\.enabled).map { ($0.name, $0.position) })
        }
        func reload(_ list: [String], until done: @escaping @Sendable ([String: Int?]) -> Bool) async throws {
            try Self.config(extensions: list).write(toFile: d.configPath, atomically: true, encoding: .utf8)
            d.signal(SIGHUP)
            try await offPool {
                try waitUntil("extensions after SIGHUP are \(list)", timeout: .seconds(10)) {
                    let list = try d.json([ExtensionInfo].self, "extensions")
                    return done(Dictionary(uniqueKeysWithValues: list.filter(\.enabled).map { ($0.name, $0.position) }))
                }
            }
        }

        #expect(try await d.ctl("vm", "start", "va", "--nic", a, "--mac", Self.macA).status == 0)
        let vetoed = try await d.ctl("vm", "start", "vb", "--nic", b, "--mac", Self.macA)
        #expect(vetoed.status != 0 && vetoed.stderr.contains("duplicate-mac-guard"), "positive control: \(vetoed.stderr)")

        try await reload(["mac-spoof-guard", "mac-limit"]) { $0["duplicate-mac-guard"] == nil && $0.count == 2 }
        let dup = try await d.ctl("vm", "start", "vb", "--nic", b, "--mac", Self.macA)
        #expect(dup.status == 0, "duplicate MAC accepted once duplicate-mac-guard is disabled: \(dup.stderr)")

        // Back, and first among the filtering extensions as listed.
        try await reload(["duplicate-mac-guard", "mac-limit", "mac-spoof-guard"]) { $0.count == 3 }
        let now = try await enabled()
        #expect(now["duplicate-mac-guard"]! ?? 99 < now["mac-limit"]! ?? -1, "order as listed: \(now)")
        #expect(now["mac-limit"]! ?? 99 < now["mac-spoof-guard"]! ?? -1, "order as listed: \(now)")
        let vetoedAgain = try await d.ctl("vm", "start", "vc", "--nic", c, "--mac", Self.macA)
        #expect(vetoedAgain.status != 0 && vetoedAgain.stderr.contains("duplicate-mac-guard"), "\(vetoedAgain.stderr)")
        #expect(d.isRunning)
    }

    @Test("vm stop while the guest is attached is refused (busy, names the TAP, changes nothing); --force removes it")
    func vmStopRefusedWhileAttached() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let tap = names.name("s0")
        cleanup.deleteLink(tap)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        #expect(try await d.ctl("vm", "start", "busy", "--nic", tap, "--mac", Self.macA).status == 0)
        let guest = try GuestNIC(tap: tap, mac: Self.macA)
        cleanup.add("detach \(tap)") { guest.close() }
        _ = try await d.waitForEvents(.nicConnect, port: tap)

        let refused = try await d.ctl("vm", "stop", "busy", "--json")
        #expect(refused.status != 0)
        #expect(refused.stdout.contains("\"busy\"") && refused.stdout.contains(tap), "JSON error names code and TAP: \(refused.stdout)")
        let plain = try await d.ctl("vm", "stop", "busy")
        #expect(plain.stderr.contains(tap) && plain.stderr.contains("--force"), "\(plain.stderr)")
        #expect(try await linkExists(tap), "nothing changed")
        #expect(try await d.port(named: tap)?.nic?.state == .connected)

        let forced = try await d.ctl("vm", "stop", "busy", "--force")
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try await !linkExists(tap))
        #expect(try await d.show().ports.isEmpty)
    }
}
