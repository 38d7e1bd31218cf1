import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// `tapswitchctl mirror` against the real `tapswitchd` on real TAPs with ``FakeVM``s: A↔B traffic
/// mirrored to C.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct MirrorDeviceTests {
    static let macs = ["52:54:00:d2:00:0a", "52:54:00:d2:00:0b", "52:54:00:d2:00:0c"]

    struct Trio {
        let a: GuestNIC
        let b: GuestNIC
        let c: GuestNIC
        let taps: [String]
    }

    func startTrio(_ d: DaemonUnderTest, cleanup: Cleanup) async throws -> Trio {
        let names = UniqueNames()
        let taps = ["ma", "mb", "mc"].map { names.name($0) }
        for tap in taps { cleanup.deleteLink(tap) }
        for (k, tap) in taps.enumerated() {
            let r = try await d.ctl("vm", "start", "m\(k)", "--nic", "\(tap),mac=\(Self.macs[k])")
            try #require(r.status == 0, "vm start m\(k): \(r.stderr)")
        }
        let nics = try (0..<3).map { try GuestNIC(tap: taps[$0], mac: Self.macs[$0]) }
        cleanup.add("detach FakeVMs") { for n in nics { n.close() } }
        try await d.waitForEvents("nic-connect on all three") { evs in
            taps.allSatisfy { tap in evs.contains { $0.kind == .nicConnect && $0.portName == tap } }
        }
        return Trio(a: nics[0], b: nics[1], c: nics[2], taps: taps)
    }

    /// `rounds` exchanges A→B, B→A with `token`, each crossing confirmed; returns the frames sent, in order.
    func exchange(_ t: Trio, rounds: Int, token: UInt32) async throws -> [[UInt8]] {
        try await offPool {
            var sent: [[UInt8]] = []
            for seq in 0..<UInt32(rounds) {
                let req = Probe.frame(dst: t.b.mac, src: t.a.mac, token: token, seq: 2 * seq)
                try t.a.send(req)
                try #require(try t.b.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token } == req, "request \(seq) did not reach B")
                let rep = Probe.frame(dst: t.a.mac, src: t.b.mac, token: token, seq: 2 * seq + 1)
                try t.b.send(rep)
                try #require(try t.a.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token } == rep, "answer \(seq) did not reach A")
                sent += [req, rep]
            }
            return sent
        }
    }

    /// The frames with `token` that reach `nic` within `timeout` of each other, up to `limit`.
    func collect(_ nic: GuestNIC, token: UInt32, limit: Int, timeout: Duration = .seconds(3)) async throws -> [[UInt8]] {
        try await offPool {
            var got: [[UInt8]] = []
            while got.count < limit, let f = try nic.receive(timeout: timeout, where: { Probe.parse($0)?.token == token }) { got.append(f) }
            return got
        }
    }

    func mirrors(_ d: DaemonUnderTest) async throws -> [MirrorInfo] { try await d.json([MirrorInfo].self, "mirror", "list") }

    @Test("A↔B mirrored to C: B and A get every frame, C a copy of each in order, counted exactly and apart from the ports' counters; del stops it")
    func bothDirections() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        // No extension that keeps ports off the fast path: only the mirror does.
        let d = try DaemonUnderTest(config: .text("[switch]\nunknown_unicast = \"flood\"\n[extensions]\nenable = []\n"), cleanup: cleanup)
        try await d.start()
        let t = try await startTrio(d, cleanup: cleanup)
        _ = try await exchange(t, rounds: 2, token: 1)  // both MACs learned: what follows is unicast
        let pathBefore = try await d.port(named: t.taps[0])?.offload
        if d.log.contains("offload xdp: learned unicast flows") {
            #expect(pathBefore?.hasPrefix("fast path (xdp)") == true)  // the positive control for the path check below
        }
        let cBefore = try #require(try await d.port(named: t.taps[2])?.counters)

        let add = try await d.ctl("mirror", "add", "m1", "--source", t.taps[0], "--to", t.taps[2])
        try #require(add.status == 0, "mirror add: \(add.stderr)")
        // Before the command returned, A's flows left the fast path.
        let pathDuring = try #require(try await d.port(named: t.taps[0])?.offload)
        #expect(pathDuring.hasPrefix("slow path"), "\(pathDuring)")
        if pathBefore?.hasPrefix("fast path (xdp)") == true { #expect(pathDuring == "slow path: port-mirror: mirrored by m1") }

        let sent = try await exchange(t, rounds: 20, token: 0xB0B)
        let copies = try await collect(t.c, token: 0xB0B, limit: sent.count + 1)
        #expect(copies == sent, "C got \(copies.count) of \(sent.count) copies")

        let m = try #require(try await mirrors(d).first)
        #expect(m.active && m.mirror.direction == .both && m.mirror.to == t.taps[2])
        #expect(m.frames == UInt64(sent.count) && m.bytes == UInt64(copies.reduce(0) { $0 + $1.count }) && m.drops == 0, "\(m)")
        // The copies are not C's traffic.
        let cAfter = try #require(try await d.port(named: t.taps[2])?.counters)
        #expect(cAfter.framesOut == cBefore.framesOut && cAfter.drops == cBefore.drops)
        // show --json carries the same counters (what /metrics reads).
        #expect(try await d.show().mirrors?.first?.frames == UInt64(sent.count))

        let del = try await d.ctl("mirror", "del", "m1")
        try #require(del.status == 0, "mirror del: \(del.stderr)")
        #expect(try await mirrors(d).isEmpty)
        if pathBefore?.hasPrefix("fast path (xdp)") == true {
            #expect(try await d.port(named: t.taps[0])?.offload?.hasPrefix("fast path (xdp)") == true)
        }
        // Nothing is copied any more; the positive control is that A and B still exchange.
        _ = try await exchange(t, rounds: 3, token: 0xD0D)
        #expect(try await collect(t.c, token: 0xD0D, limit: 1, timeout: .milliseconds(500)).isEmpty)

        let events = try await d.events()
        #expect(events.contains { $0.kind == .mirrorAdd && $0.portName == t.taps[2] && $0.detail?.contains("mirror m1") == true })
        #expect(events.contains { $0.kind == .mirrorDel && $0.detail?.contains("mirror m1") == true })
    }

    @Test("--direction in copies only what the source sends, --vlan only frames in that VLAN")
    func directionAndVLAN() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let t = try await startTrio(d, cleanup: cleanup)
        _ = try await exchange(t, rounds: 1, token: 1)

        #expect(try await d.ctl("mirror", "add", "in-only", "--source", t.taps[0], "--direction", "in", "--to", t.taps[2]).status == 0)
        let sent = try await exchange(t, rounds: 5, token: 0x1D)
        let copies = try await collect(t.c, token: 0x1D, limit: sent.count)
        #expect(copies == stride(from: 0, to: sent.count, by: 2).map { sent[$0] })  // A's requests only
        #expect(try await d.ctl("mirror", "del", "in-only").status == 0)

        // The ports are untagged (VLAN 0 on the switch): a mirror of VLAN 10 selects nothing...
        #expect(try await d.ctl("mirror", "add", "v10", "--source", t.taps[0], "--vlan", "10", "--to", t.taps[2]).status == 0)
        _ = try await exchange(t, rounds: 3, token: 0x10)
        #expect(try await collect(t.c, token: 0x10, limit: 1, timeout: .milliseconds(500)).isEmpty)
        #expect(try await mirrors(d).first?.frames == 0)
        // ...while the same mirror without --vlan copies (positive control).
        #expect(try await d.ctl("mirror", "del", "v10").status == 0)
        #expect(try await d.ctl("mirror", "add", "all", "--source", t.taps[0], "--to", t.taps[2]).status == 0)
        let again = try await exchange(t, rounds: 3, token: 0x11)
        #expect(try await collect(t.c, token: 0x11, limit: again.count) == again)
    }

    @Test("C does not read: A→B loses nothing while the copies C has no room for are counted as mirror drops, not as anyone's drops")
    func capacity() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let t = try await startTrio(d, cleanup: cleanup)
        _ = try await exchange(t, rounds: 1, token: 1)
        #expect(try await d.ctl("mirror", "add", "m", "--source", t.taps[0], "--direction", "in", "--to", t.taps[2]).status == 0)

        // 3000 frames A→B in bursts of 100, each burst read by B before the next (so no ring
        // overflows on the way); C's TAP queue holds 1000 frames and nobody reads it.
        let total = 3000
        let received = try await offPool { () -> [UInt32] in
            var seqs: [UInt32] = []
            for burst in 0..<(total / 100) {
                for k in 0..<100 { try t.a.send(Probe.frame(dst: t.b.mac, src: t.a.mac, token: 0xCAB, seq: UInt32(burst * 100 + k))) }
                for _ in 0..<100 {
                    guard let f = try t.b.receive(timeout: .seconds(3), where: { Probe.parse($0)?.token == 0xCAB }) else { break }
                    seqs.append(Probe.parse(f)!.seq)
                }
            }
            return seqs
        }
        #expect(received == (0..<UInt32(total)).map { $0 }, "B got \(received.count) of \(total)")
        let m = try #require(try await mirrors(d).first)
        #expect(m.frames + m.drops == UInt64(total), "\(m)")
        #expect(m.drops > 0 && m.frames >= 500, "\(m)")
        // Nobody's drops: not A's, B's or C's.
        for tap in t.taps {
            let drops = try #require(try await d.port(named: tap)?.counters).drops
            #expect(drops.isEmpty, "\(tap): \(drops)")
        }
        // What C finally reads is the copies the switch counted as sent (its queue's worth).
        let queued = try await collect(t.c, token: 0xCAB, limit: total, timeout: .milliseconds(500))
        #expect(UInt64(queued.count) == m.frames)
    }

    @Test("Bad mirror requests are refused naming the flag or field; nothing changes")
    func badRequests() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let t = try await startTrio(d, cleanup: cleanup)
        #expect(try await d.ctl("mirror", "add", "m", "--source", t.taps[0], "--to", t.taps[2]).status == 0)
        let cases: [([String], Int32, String)] = [
            (["m2", "--source", "nosuchport", "--to", t.taps[2]], 1, "source: no port named 'nosuchport'"),
            (["m2", "--source", t.taps[0], "--to", "nosuchport"], 1, "to: no port named 'nosuchport'"),
            (["m2", "--source", t.taps[0], "--to", t.taps[0]], 2, "--to: '\(t.taps[0])' is also a source"),
            (["m", "--source", t.taps[1], "--to", t.taps[2]], 1, "mirror m already exists"),
            (["m2", "--source", t.taps[0], "--vlan", "4095", "--to", t.taps[2]], 2, "--vlan: VLAN 4095 is out of range"),
            (["m2", "--source", t.taps[0], "--direction", "sideways", "--to", t.taps[2]], 2, "--direction: 'sideways' is not in, out or both"),
            (["m2", "--source", "\(t.taps[0]),\(t.taps[0])", "--to", t.taps[2]], 2, "--source: port '\(t.taps[0])' is listed twice"),
            (["bad/name", "--source", t.taps[0], "--to", t.taps[2]], 2, "<name>: 'bad/name' is not a mirror name"),
        ]
        for (args, status, message) in cases {
            let r = try await d.ctl(["mirror", "add"] + args)
            #expect(r.status == status && r.stderr.contains(message), "\(args): \(r.status) \(r.stderr)")
        }
        let del = try await d.ctl("mirror", "del", "nosuch")
        #expect(del.status == 1 && del.stderr.contains("no mirror named 'nosuch'"), "\(del.stderr)")
        // The daemon itself names the JSON field when a client skips tapswitchctl's checks.
        let raw = try await offPool {
            try RawControlClient.exchange(path: d.socket, Array(#"{"op":"mirror-add","mirror":{"name":"x","source":["a"],"to":"a"}}"#.utf8) + [10])
        }
        #expect(raw.first?.contains("mirror.to: 'a' is also a source") == true, "\(raw)")
        // Nothing changed: the one mirror, still copying.
        #expect(try await mirrors(d).map(\.mirror.name) == ["m"])
        _ = try await exchange(t, rounds: 1, token: 1)
        let sent = try await exchange(t, rounds: 2, token: 0xBAD)
        #expect(try await collect(t.c, token: 0xBAD, limit: sent.count) == sent)
    }

    @Test("A mirror survives SIGKILL and restart, and waits while its destination is gone, resuming when it is back")
    func persistence() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let t = try await startTrio(d, cleanup: cleanup)
        #expect(try await d.ctl("mirror", "add", "keep", "--source", t.taps[0], "--direction", "out", "--vlan", "5", "--to", t.taps[2]).status == 0)
        #expect(try await d.ctl("mirror", "del", "keep").status == 0)
        #expect(try await d.ctl("mirror", "add", "keep", "--source", "\(t.taps[0]),\(t.taps[1])", "--direction", "in", "--to", t.taps[2]).status == 0)

        try await d.sigkill()
        try await d.start()
        _ = try await d.waitForEvents("re-adoption") { evs in
            t.taps.allSatisfy { tap in evs.contains { $0.kind == .nicConnect && $0.portName == tap && $0.restore } }
        }
        _ = try await exchange(t, rounds: 1, token: 1)  // learned again (an unknown B is flooded to C too)
        let m = try #require(try await mirrors(d).first)
        #expect(m.mirror == MirrorSpec(name: "keep", source: [t.taps[0], t.taps[1]], direction: .in, to: t.taps[2]) && m.active)
        let sent = try await exchange(t, rounds: 3, token: 0x5EE)
        #expect(try await collect(t.c, token: 0x5EE, limit: sent.count) == sent)

        // The destination's VM stops: the mirror stays, inactive, naming it...
        #expect(try await d.ctl("vm", "stop", "m2", "--force").status == 0)
        t.c.close()
        try await d.waitForEvents(.portDelete, port: t.taps[2])
        let waiting = try #require(try await mirrors(d).first)
        #expect(!waiting.active && waiting.missing == [t.taps[2]])
        _ = try await exchange(t, rounds: 2, token: 0x5EF)  // traffic goes on meanwhile
        // ...and copies again when a port of that name is back.
        #expect(try await d.ctl("vm", "start", "m2", "--nic", "\(t.taps[2]),mac=\(Self.macs[2])").status == 0)
        let c = try GuestNIC(tap: t.taps[2], mac: Self.macs[2])
        cleanup.add("detach the new C") { c.close() }
        try await d.waitForEvents(.nicConnect, port: t.taps[2], count: 2)
        #expect(try await mirrors(d).first?.active == true)
        let later = try await exchange(t, rounds: 2, token: 0x5F0)
        #expect(try await collect(c, token: 0x5F0, limit: later.count) == later)
    }

    @Test("[[mirror]] in the config: applied after the VMs it names; --check-config names FILE:LINE of a bad one")
    func fromConfig() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let taps = ["fa", "fb", "fc"].map { names.name($0) }
        for tap in taps { cleanup.deleteLink(tap) }
        var text = "[switch]\nunknown_unicast = \"flood\"\n"
        for (k, tap) in taps.enumerated() { text += "[[vm]]\nname = \"f\(k)\"\n[[vm.nic]]\ntap = \"\(tap)\"\nmac = \"\(Self.macs[k])\"\n" }
        text += "[[mirror]]\nname = \"cfg\"\nsource = \"\(taps[0])\"\ndirection = \"out\"\nto = \"\(taps[2])\"\n"
        let d = try DaemonUnderTest(config: .text(text), cleanup: cleanup)
        try await d.start()
        let nics = try (0..<3).map { try GuestNIC(tap: taps[$0], mac: Self.macs[$0]) }
        cleanup.add("detach FakeVMs") { for n in nics { n.close() } }
        try await d.waitForEvents("nic-connect on all three") { evs in
            taps.allSatisfy { tap in evs.contains { $0.kind == .nicConnect && $0.portName == tap } }
        }
        let t = Trio(a: nics[0], b: nics[1], c: nics[2], taps: taps)
        _ = try await exchange(t, rounds: 1, token: 1)
        let m = try #require(try await mirrors(d).first)
        #expect(m.mirror == MirrorSpec(name: "cfg", source: [taps[0]], direction: .out, to: taps[2]) && m.active)
        let sent = try await exchange(t, rounds: 3, token: 0xCF)
        #expect(try await collect(t.c, token: 0xCF, limit: sent.count) == stride(from: 1, to: sent.count, by: 2).map { sent[$0] })

        let bad = try d.dir.write("bad.toml", text.replacingOccurrences(of: "direction = \"out\"", with: "vlan = 5000"))
        let check = try await offPool { try Shell.run([try Products.path("tapswitchd"), "--check-config", "--config", bad]) }
        #expect(check.status != 0 && check.stderr.contains("\(bad):21: mirror.vlan: VLAN 5000 is out of range 1..4094"), "\(check.stderr)")
    }
}
