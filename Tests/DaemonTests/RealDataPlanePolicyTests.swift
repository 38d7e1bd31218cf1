import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// Port policies on the real daemon (DataPlane backend, TAPs, AF_PACKET) with ``FakeVM``s attached as
/// QEMU attaches, driven through `tapswitchctl` only: the attacks of issue 11 on the shipped default
/// config, trunks, and settings changed on running VMs.
@Suite(.serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct RealDataPlanePolicyTests {
    /// One VM NIC of a test: its TAP, MAC and the FakeVM once attached.
    struct VM {
        let name: String
        let tap: String
        let mac: String
    }

    func vms(_ names: UniqueNames, _ roles: [String]) -> [VM] {
        roles.enumerated().map { i, role in
            VM(name: "p" + role, tap: names.name(role), mac: String(format: "52:54:00:e1:00:%02x", i + 1))
        }
    }

    /// `vm start` for each (with `extra` comma-form settings), FakeVMs attached, NIC_CONNECT waited for.
    func start(_ d: DaemonUnderTest, _ list: [VM], extra: [String: String] = [:], cleanup: Cleanup) async throws -> [String: GuestNIC] {
        var nics: [String: GuestNIC] = [:]
        for vm in list {
            cleanup.deleteLink(vm.tap)
            let nic = "\(vm.tap),mac=\(vm.mac)" + (extra[vm.name].map { "," + $0 } ?? "")
            let r = try await d.ctl("vm", "start", vm.name, "--nic", nic)
            try #require(r.status == 0, "vm start \(vm.name): \(r.stderr)\n\(d.log)")
        }
        for vm in list {
            let g = try GuestNIC(tap: vm.tap, mac: vm.mac)
            cleanup.add("detach \(vm.tap)") { g.close() }
            nics[vm.name] = g
        }
        _ = try await d.waitForEvents("nic-connect on every port") { evs in
            list.allSatisfy { vm in evs.contains { $0.kind == .nicConnect && $0.portName == vm.tap } }
        }
        return nics
    }

    static func mac(_ text: String) -> [UInt8] { TestFrames.parseMAC(text)! }

    /// A probe frame, optionally tagged (`vlan`) or double-tagged (`outer` then `vlan`).
    static func probe(dst: [UInt8], src: [UInt8], token: UInt32, seq: UInt32, vlan: UInt16? = nil, outer: UInt16? = nil) -> [UInt8] {
        let f = TestFrames.ethernet(dst: dst, src: src, etherType: 0x88b5, vlan: vlan,
                                    payload: Probe.magic + bytes(token) + bytes(seq))
        guard let outer else { return f }
        return Array(f[0..<12]) + [0x81, 0x00, UInt8(outer >> 8), UInt8(outer & 0xFF)] + Array(f[12...])
    }

    static func bytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    /// (token, seq, VLAN id of the outer tag or nil) of a probe frame, tagged or not.
    static func parse(_ f: [UInt8]) -> (token: UInt32, seq: UInt32, vlan: UInt16?)? {
        if f.count >= 18, f[12] == 0x81, f[13] == 0x00 {
            let untagged = Array(f[0..<12]) + Array(f[16...])
            return Probe.parse(untagged).map { ($0.token, $0.seq, UInt16(f[14] & 0x0F) << 8 | UInt16(f[15])) }
        }
        return Probe.parse(f).map { ($0.token, $0.seq, nil) }
    }

    /// Frames of flow `token` that reach `nic` within `timeout` (stops early once `until` holds).
    static func collect(_ nic: GuestNIC, token: UInt32, timeout: Duration, until: (([(seq: UInt32, vlan: UInt16?)]) -> Bool)? = nil)
        throws -> [(seq: UInt32, vlan: UInt16?)] {
        var got: [(seq: UInt32, vlan: UInt16?)] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let left = ContinuousClock.now.duration(to: deadline)
            guard let f = try nic.receive(timeout: left, where: { parse($0)?.token == token }), let p = parse(f) else { break }
            got.append((p.seq, p.vlan))
            if let until, until(got) { break }
        }
        return got
    }

    func drops(_ d: DaemonUnderTest, _ tap: String, _ prefix: String) async throws -> UInt64 {
        let port = try #require(try await d.port(named: tap))
        return port.counters.drops.filter { $0.key.direction == .ingress && $0.key.reason.hasPrefix(prefix) }.values.reduce(0, +)
    }

    @Test("Shipped default config: VLAN-hop and MAC-spoofing attempts reach nothing, the victims keep their traffic, drops show by reason")
    func attacksOnDefaultConfig() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["a", "u", "c", "v", "w"])  // attacker, untagged victim and peer, VLAN-10 victim and peer
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, extra: ["pv": "vlan=10", "pw": "vlan=10"], cleanup: cleanup)
        let (a, u, c, v, w) = (n["pa"]!, n["pu"]!, n["pc"]!, n["pv"]!, n["pw"]!)
        let token = UInt32.random(in: 1...UInt32.max)
        let bcast = TestFrames.broadcastMAC

        let result = try await offPool { () throws -> String? in
            // Everyone announces itself (the switch learns each MAC on its port).
            for g in [u, c, v, w] { try g.send(Self.probe(dst: bcast, src: g.mac, token: token, seq: 1)) }
            // VLAN hop: tagged and double-tagged, broadcast and unicast to v, from an untagged VM.
            for k: UInt32 in 0..<30 {
                try a.send(Self.probe(dst: bcast, src: a.mac, token: token, seq: 100 + k, vlan: 10))
                try a.send(Self.probe(dst: v.mac, src: a.mac, token: token, seq: 200 + k, vlan: 10))
                try a.send(Self.probe(dst: v.mac, src: a.mac, token: token, seq: 300 + k, vlan: 10, outer: 0))
            }
            // MAC spoofing: a claims u's MAC.
            for k: UInt32 in 0..<40 { try a.send(Self.probe(dst: c.mac, src: u.mac, token: token, seq: 400 + k)) }
            // A marker from a itself: once c has it, everything a sent before it went through the switch.
            try a.send(Self.probe(dst: bcast, src: a.mac, token: token, seq: 999))
            let marker = try Self.collect(c, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 999 } }
            guard marker.contains(where: { $0.seq == 999 }) else { return "a's own broadcast never reached c" }
            if let spoofed = marker.first(where: { (400..<440).contains($0.seq) }) { return "a spoofed frame reached c: \(spoofed)" }
            // Traffic for u after the spoofing attempt goes to u, all of it.
            for k: UInt32 in 0..<40 { try c.send(Self.probe(dst: u.mac, src: c.mac, token: token, seq: 500 + k)) }
            let toU = try Self.collect(u, token: token, timeout: .seconds(5)) { $0.filter { (500..<540).contains($0.seq) }.count == 40 }
            let stolen = try Self.collect(a, token: token, timeout: .milliseconds(300)).filter { (500..<540).contains($0.seq) }
            guard toU.filter({ (500..<540).contains($0.seq) }).count == 40 else { return "u got \(toU.count) of its 40 frames" }
            guard stolen.isEmpty else { return "a received \(stolen.count) frames for u" }
            // Positive control for v: its VLAN-10 peer reaches it; none of a's tagged frames did.
            try w.send(Self.probe(dst: bcast, src: w.mac, token: token, seq: 777))
            let atV = try Self.collect(v, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 777 } }
            guard atV.contains(where: { $0.seq == 777 && $0.vlan == nil }) else { return "v never got w's VLAN-10 broadcast: \(atV)" }
            let hops = atV.filter { (100..<400).contains($0.seq) }
            return hops.isEmpty ? nil : "\(hops.count) VLAN-hop frames reached v"
        }
        #expect(result == nil, "\(result ?? "")\n\(d.log)")
        let tapA = list[0].tap
        #expect(try await drops(d, tapA, "VLAN not allowed") == 60)
        #expect(try await drops(d, tapA, "QinQ") == 30)
        #expect(try await drops(d, tapA, "MAC spoofing") == 40)
        let show = try await d.ctl("show")
        #expect(show.stdout.contains("MAC spoofing") && show.stdout.contains("VLAN not allowed on port"), "show names the reasons:\n\(show.stdout)")
        let fdb = try await d.json([FDBEntry].self, "fdb")
        #expect(fdb.filter { $0.mac.description == list[1].mac }.map(\.portName) == [list[1].tap], "u's MAC stayed on u: \(fdb)")
    }

    @Test("Trunk with allowed list and native VLAN; port set vlan= moves a running VM; settings survive SIGKILL and restart")
    func trunkAndRuntimeChange() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["t", "x", "y", "z", "q"])
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, extra: ["pt": "vlan-mode=trunk,allowed-vlans=10,20,native-vlan=30", "px": "vlan=10",
                                                 "py": "vlan=20", "pz": "vlan=30", "pq": "vlan=40"], cleanup: cleanup)
        let (t, x, y, z, q) = (n["pt"]!, n["px"]!, n["py"]!, n["pz"]!, n["pq"]!)
        let bcast = TestFrames.broadcastMAC
        let tapX = list[1].tap, tapT = list[0].tap

        let token = UInt32.random(in: 1...UInt32.max)
        let trunk = try await offPool { () throws -> String? in
            try x.send(Self.probe(dst: bcast, src: x.mac, token: token, seq: 10))
            try y.send(Self.probe(dst: bcast, src: y.mac, token: token, seq: 20))
            try z.send(Self.probe(dst: bcast, src: z.mac, token: token, seq: 30))
            try q.send(Self.probe(dst: bcast, src: q.mac, token: token, seq: 40))
            // Marker through the trunk's native VLAN: once t has it, x, y and q were handled too (sent earlier).
            let atT = try Self.collect(t, token: token, timeout: .seconds(5)) { $0.count >= 3 }
            let expected: [UInt32: UInt16?] = [10: 10, 20: 20, 30: nil]
            for (seq, vlan) in expected where !atT.contains(where: { $0.seq == seq && $0.vlan == vlan }) {
                return "t lacks seq \(seq) with tag \(vlan.map(String.init) ?? "none"): \(atT)"
            }
            // Into the trunk: tagged 20 to y (untagged there), untagged to z (native), tagged 40 nowhere.
            try t.send(Self.probe(dst: bcast, src: t.mac, token: token, seq: 120, vlan: 20))
            try t.send(Self.probe(dst: bcast, src: t.mac, token: token, seq: 140, vlan: 40))
            try t.send(Self.probe(dst: bcast, src: t.mac, token: token, seq: 130))
            let atZ = try Self.collect(z, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 130 } }
            guard atZ.contains(where: { $0.seq == 130 && $0.vlan == nil }) else { return "z lacks the native frame: \(atZ)" }
            let atY = try Self.collect(y, token: token, timeout: .seconds(2)) { $0.contains { $0.seq == 120 } }
            guard atY.contains(where: { $0.seq == 120 && $0.vlan == nil }) else { return "y lacks t's VLAN-20 frame: \(atY)" }
            let atQ = try Self.collect(q, token: token, timeout: .milliseconds(300))
            return atQ.contains { $0.seq == 140 } ? "q got t's VLAN-40 frame (not allowed on the trunk)" : nil
        }
        #expect(trunk == nil, "\(trunk ?? "")\n\(d.log)")
        #expect(try await drops(d, tapT, "VLAN not allowed") == 1)

        // x moves from VLAN 10 to 20 while running.
        let set = try await d.ctl("port", "set", tapX, "vlan=20")
        #expect(set.status == 0, "\(set.stderr)")
        #expect(set.stdout.contains("vlan") && set.stdout.contains("20"), "\(set.stdout)")
        _ = try await d.waitForEvents(.portProperty, port: tapX)
        let moved = try await crossOnce(from: x, to: y, trunk: t, expectTag: 20)
        #expect(moved == nil, "\(moved ?? "")")
        let get = try await d.json([PortInfo].self, "port", "get", tapX)
        #expect(get.first?.settings == ["vlan=20"])
        #expect(get.first?.vlanPolicy == .access(20))
        let bad = try await d.ctl("port", "set", tapX, "vlan=5000")
        #expect(bad.status != 0 && bad.stderr.contains("vlan=5000"), "\(bad.stderr)")

        // SIGKILL: the recorded settings come back with the re-adopted ports.
        try await d.sigkill()
        try await d.start()
        _ = try await d.waitForEvents("re-adoption") { evs in
            list.allSatisfy { vm in evs.contains { $0.kind == .nicConnect && $0.portName == vm.tap && $0.restore } }
        }
        #expect(try await d.port(named: tapX)?.settings == ["vlan=20"])
        #expect(try await d.port(named: tapT)?.settings == ["vlan-mode=trunk", "allowed-vlans=10,20", "native-vlan=30"])
        let after = try await crossOnce(from: x, to: y, trunk: t, expectTag: 20)
        #expect(after == nil, "\(after ?? "")\n\(d.log)")
    }

    /// A broadcast from `from` reaches `to` untagged and `trunk` tagged `expectTag`; nil when so.
    func crossOnce(from: GuestNIC, to: GuestNIC, trunk: GuestNIC, expectTag: UInt16) async throws -> String? {
        let token = UInt32.random(in: 1...UInt32.max)
        return try await offPool { () throws -> String? in
            try from.send(Self.probe(dst: TestFrames.broadcastMAC, src: from.mac, token: token, seq: 1))
            let atTo = try Self.collect(to, token: token, timeout: .seconds(5)) { !$0.isEmpty }
            guard atTo.first?.vlan == nil, !atTo.isEmpty else { return "\(to.tap) got \(atTo)" }
            let atTrunk = try Self.collect(trunk, token: token, timeout: .seconds(5)) { !$0.isEmpty }
            return atTrunk.first?.vlan == expectTag ? nil : "trunk got \(atTrunk)"
        }
    }
}
