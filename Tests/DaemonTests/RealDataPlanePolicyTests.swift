import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// Port policies on the real daemon (DataPlane backend, TAPs, AF_PACKET) with ``FakeVM``s attached as
/// QEMU attaches, driven through `tapswitchctl` only: the attacks of issue 11 on the shipped default
/// config, trunks, and settings changed on running VMs.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
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

    // MARK: - Guards, isolation and extension management on real TAPs

    /// IPv4/UDP, IPv6 and ARP frames carrying the probe's token in their payload (for `collectToken`).
    enum Frames {
        static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
        static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

        static func udp4(dst: [UInt8], src: [UInt8], from: UInt32, ports: (UInt16, UInt16), payload: [UInt8]) -> [UInt8] {
            let udp = be16(ports.0) + be16(ports.1) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
            let ip: [UInt8] = [0x45, 0] + be16(UInt16(20 + udp.count)) + [0, 0, 0, 0, 64, 17, 0, 0] + be32(from) + be32(0xFFFF_FFFF)
            return TestFrames.ethernet(dst: dst, src: src, etherType: 0x0800, payload: ip + udp)
        }

        /// A DHCP OFFER (BOOTREPLY from port 67) whose `sname` carries `marker`.
        static func dhcpOffer(dst: [UInt8], src: [UInt8], marker: [UInt8]) -> [UInt8] {
            var b: [UInt8] = [2, 1, 6, 0] + be32(7) + [0, 0, 0, 0] + be32(0) + be32(0x0A00_0032) + be32(0) + be32(0)
            b += Array(repeating: 0, count: 16) + marker + Array(repeating: 0, count: 64 + 128 - marker.count)
            b += be32(0x6382_5363) + [53, 1, 2, 255]
            return udp4(dst: dst, src: src, from: 0x0A00_0005, ports: (67, 68), payload: b)  // its own, allowed, address
        }

        /// An ICMPv6 router advertisement from fe80::1 with `marker` after it.
        static func routerAdvertisement(dst: [UInt8], src: [UInt8], marker: [UInt8]) -> [UInt8] {
            let icmp: [UInt8] = [134, 0, 0, 0, 64, 0] + be16(1800) + be32(0) + be32(0) + marker
            let ll: [UInt8] = [0xFE, 0x80] + Array(repeating: 0, count: 13) + [1]
            let all: [UInt8] = [0xFF, 0x02] + Array(repeating: 0, count: 13) + [1]
            let ip: [UInt8] = [0x60, 0, 0, 0] + be16(UInt16(icmp.count)) + [58, 255] + ll + all
            return TestFrames.ethernet(dst: dst, src: src, etherType: 0x86DD, payload: ip + icmp)
        }

        /// An ARP reply claiming `ip` for `src`, with `marker` in the padding.
        static func arpReply(src: [UInt8], ip: UInt32, marker: [UInt8]) -> [UInt8] {
            let body: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 2] + src + be32(ip) + Array(repeating: 0, count: 6) + be32(ip)
            return TestFrames.ethernet(dst: TestFrames.broadcastMAC, src: src, etherType: 0x0806, payload: body + marker)
        }
    }

    /// How many frames containing `marker` reach `nic` within `timeout`.
    static func countMarked(_ nic: GuestNIC, _ marker: [UInt8], timeout: Duration, atLeast: Int = Int.max) throws -> Int {
        var n = 0
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, n < atLeast {
            let left = ContinuousClock.now.duration(to: deadline)
            guard try nic.receive(timeout: left, where: { $0.firstRange(of: marker) != nil }) != nil else { break }
            n += 1
        }
        return n
    }

    @Test("Rogue DHCP server, rogue RA and ARP spoofing from guarded VMs are dropped; isolated and community ports; extension disable/enable and a vetoed setting")
    func guardsIsolationAndExtensions() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["r", "s", "i", "j", "k"])  // rogue, its peer, then isolated / community / community
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, extra: ["pr": "dhcp-guard=on,router-guard=on,ip-guard=on,allowed-ips=10.0.0.5",
                                                 "pi": "isolated=on", "pj": "pvlan=community:7", "pk": "pvlan=community:7"],
                                cleanup: cleanup)
        let (r, s, i, j, k) = (n["pr"]!, n["ps"]!, n["pi"]!, n["pj"]!, n["pk"]!)
        let tapR = list[0].tap, tapS = list[1].tap
        let marker = Array("tswguard".utf8) + Self.bytes(UInt32.random(in: 1...UInt32.max))
        let bcast = TestFrames.broadcastMAC

        let guards = try await offPool { () throws -> String? in
            for _ in 0..<5 {
                try r.send(Frames.dhcpOffer(dst: bcast, src: r.mac, marker: marker))
                try r.send(Frames.routerAdvertisement(dst: bcast, src: r.mac, marker: marker))
                try r.send(Frames.arpReply(src: r.mac, ip: 0x0A00_0001, marker: marker))  // claims the gateway
            }
            // Positive control: its own address passes the same guard.
            try r.send(Frames.arpReply(src: r.mac, ip: 0x0A00_0005, marker: marker + [1]))
            guard try Self.countMarked(s, marker + [1], timeout: .seconds(5), atLeast: 1) == 1 else { return "r's own ARP never reached s" }
            let leaked = try Self.countMarked(s, marker, timeout: .milliseconds(300))
            return leaked == 0 ? nil : "\(leaked) rogue frames reached s"
        }
        #expect(guards == nil, "\(guards ?? "")\n\(d.log)")
        #expect(try await drops(d, tapR, "DHCP server message") == 5)
        #expect(try await drops(d, tapR, "router advertisement") == 5)
        #expect(try await drops(d, tapR, "ARP sender not allowed") == 5)

        // Isolation: i reaches nobody here (no promiscuous port, no uplink); j and k reach each other only.
        let token = UInt32.random(in: 1...UInt32.max)
        let isolation = try await offPool { () throws -> String? in
            try i.send(Self.probe(dst: bcast, src: i.mac, token: token, seq: 1))
            try j.send(Self.probe(dst: bcast, src: j.mac, token: token, seq: 2))
            let atK = try Self.collect(k, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 2 } }
            guard atK.contains(where: { $0.seq == 2 }) else { return "community peer k never got j's broadcast" }
            if atK.contains(where: { $0.seq == 1 }) { return "k got the isolated port's broadcast" }
            let atS = try Self.collect(s, token: token, timeout: .milliseconds(300))
            if !atS.isEmpty { return "the ordinary port s got \(atS)" }
            let atI = try Self.collect(i, token: token, timeout: .milliseconds(100))
            return atI.isEmpty ? nil : "the isolated port got \(atI)"
        }
        #expect(isolation == nil, "\(isolation ?? "")")

        // A setting the guard refuses: s may not claim r's MAC. The old settings stay.
        let veto = try await d.ctl("port", "set", tapS, "allowed-macs=\(list[0].mac)")
        #expect(veto.status != 0 && veto.stderr.contains("mac-spoof-guard"), "\(veto.stderr)")
        #expect(try await d.port(named: tapS)?.settings == nil)

        // extension disable: the next spoofed frame passes; enable: dropped again.
        #expect(try await d.ctl("extension", "disable", "mac-spoof-guard").status == 0)
        let reachesR = try await offPool { () throws -> Int in
            try s.send(Self.probe(dst: bcast, src: r.mac, token: token, seq: 51))
            return try Self.collect(r, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 51 } }.filter { $0.seq == 51 }.count
        }
        #expect(reachesR == 1, "with the guard disabled s's spoofed broadcast is forwarded")
        let enable = try await d.ctl("extension", "enable", "mac-spoof-guard")
        #expect(enable.status == 0, "\(enable.stderr)")
        let blocked = try await offPool { () throws -> Int in
            try s.send(Self.probe(dst: bcast, src: r.mac, token: token, seq: 52))
            try s.send(Self.probe(dst: bcast, src: s.mac, token: token, seq: 53))
            let got = try Self.collect(r, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 53 } }
            return got.filter { $0.seq == 52 }.count
        }
        #expect(blocked == 0, "enabled again: the spoofed frame is dropped")
        let ext = try await d.json([ExtensionInfo].self, "extensions")
        let guardInfo = ext.first { $0.name == "mac-spoof-guard" }
        #expect(guardInfo?.enabled == true && guardInfo?.position == 0, "a new extension goes to the top of its class: \(ext)")
        #expect(guardInfo?.counters.first { $0.name == "dropped" }?.value == 1)
        let bad = try await d.ctl("extension", "set", "mac-spoof-guard", "colour=red")
        #expect(bad.status != 0 && bad.stderr.contains("unknown setting 'colour'"), "\(bad.stderr)")
    }

    @Test("[extensions.NAME] settings apply at start, and SIGHUP applies changed ones to the running extension")
    func extensionSettingsAndReload() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let shipped = try String(contentsOfFile: Products.repositoryRoot + "/config/tapswitchd.toml", encoding: .utf8)
        func config(spoofGuardDefault: Bool) -> String { shipped + "\n[extensions.mac-spoof-guard]\nvm-default = \(spoofGuardDefault)\n" }
        let d = try DaemonUnderTest(config: .text(config(spoofGuardDefault: false)), cleanup: cleanup)
        try await d.start()
        let list = vms(UniqueNames(), ["e", "f"])
        let n = try await start(d, list, cleanup: cleanup)
        let (e, f) = (n["pe"]!, n["pf"]!)
        /// Sends a broadcast from `e` with a foreign source MAC (seq 1), then one with its own (seq 2); returns the seqs `f` got.
        func spoofedThenOwn() async throws -> [UInt32] {
            let token = UInt32.random(in: 1...UInt32.max)
            return try await offPool { () throws -> [UInt32] in
                try e.send(Self.probe(dst: TestFrames.broadcastMAC, src: Self.mac("52:54:00:ee:ee:ee"), token: token, seq: 1))
                try e.send(Self.probe(dst: TestFrames.broadcastMAC, src: e.mac, token: token, seq: 2))
                return try Self.collect(f, token: token, timeout: .seconds(5)) { $0.contains { $0.seq == 2 } }.map(\.seq)
            }
        }
        #expect(try await spoofedThenOwn() == [1, 2], "vm-default = false: the VM ports are not guarded")
        try config(spoofGuardDefault: true).write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        #expect(try await waitUntil { d.logText.contains("config reloaded") }, "\(d.log)")
        #expect(try await spoofedThenOwn() == [2], "after SIGHUP: guarded")
    }
}
