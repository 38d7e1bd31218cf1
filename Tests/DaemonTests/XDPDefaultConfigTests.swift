import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// The XDP fast path under the shipped config (`config/tapswitchd.toml`: every shipped extension
/// at its defaults) on real TAPs with ``FakeVM``s attached as QEMU attaches, driven through
/// `tapswitchctl`: learned unicast is offloaded, and the guards and settings behave exactly as on
/// the slow path.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct XDPDefaultConfigTests {
    struct VM {
        let name: String
        let tap: String
        let mac: String
    }

    static let magic = Array("tswdxdp!".utf8)

    static func bytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    /// A probe (EtherType 0x88b5) with magic+token+seq, optionally 802.1Q-tagged.
    static func probe(dst: [UInt8], src: [UInt8], token: UInt32, seq: UInt32, vlan: UInt16? = nil) -> [UInt8] {
        TestFrames.ethernet(dst: dst, src: src, etherType: 0x88b5, vlan: vlan, payload: magic + bytes(token) + bytes(seq) + Array(repeating: 0, count: 30))
    }

    /// (token, seq, the 802.1Q VID or nil) of a probe.
    static func parse(_ f: [UInt8]) -> (token: UInt32, seq: UInt32, vlan: UInt16?)? {
        var f = f
        var vlan: UInt16?
        if f.count >= 18, f[12] == 0x81, f[13] == 0x00 {
            vlan = UInt16(f[14] & 0x0F) << 8 | UInt16(f[15])
            f = Array(f[0..<12]) + Array(f[16...])
        }
        guard f.count >= 30, f[12] == 0x88, f[13] == 0xb5, Array(f[14..<22]) == magic else { return nil }
        func word(_ i: Int) -> UInt32 { UInt32(f[i]) << 24 | UInt32(f[i + 1]) << 16 | UInt32(f[i + 2]) << 8 | UInt32(f[i + 3]) }
        return (word(22), word(26), vlan)
    }

    /// Sends `count` probes of a new flow from `from` to `to` and returns what `to` received of it
    /// (seq, VID) within `timeout` (stops once all arrived).
    static func exchange(_ from: GuestNIC, _ to: GuestNIC, count: UInt32, vlan: UInt16? = nil, src: [UInt8]? = nil,
                         timeout: Duration = .seconds(3)) async throws -> [(seq: UInt32, vlan: UInt16?)] {
        let token = UInt32.random(in: 1...UInt32.max)
        return try await offPool {
            for k in 0..<count { try from.send(probe(dst: to.mac, src: src ?? from.mac, token: token, seq: k, vlan: vlan)) }
            var got: [(seq: UInt32, vlan: UInt16?)] = []
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline, got.count < Int(count) {
                guard let f = try to.receive(timeout: ContinuousClock.now.duration(to: deadline), where: { parse($0)?.token == token }),
                      let p = parse(f) else { break }
                got.append((p.seq, p.vlan))
            }
            return got
        }
    }

    /// The path `show` gives port `tap`, and the fast-path frames in and out it reports.
    static func path(_ d: DaemonUnderTest, _ tap: String) async throws -> (text: String, fastIn: UInt64, fastOut: UInt64) {
        let text = try #require(try await d.port(named: tap)?.offload, "no path for \(tap)")
        guard let r = text.range(of: "fast-path frames: ") else { return (text, 0, 0) }
        let words = text[r.upperBound...].split(whereSeparator: { !$0.isNumber }).compactMap { UInt64($0) }
        return (text, words.first ?? 0, words.dropFirst().first ?? 0)
    }

    func start(_ d: DaemonUnderTest, _ list: [VM], extra: [String: String] = [:], cleanup: Cleanup) async throws -> [String: GuestNIC] {
        var nics: [String: GuestNIC] = [:]
        for vm in list {
            cleanup.deleteLink(vm.tap)
            let r = try await d.ctl("vm", "start", vm.name, "--nic", "\(vm.tap),mac=\(vm.mac)" + (extra[vm.name].map { "," + $0 } ?? ""))
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

    /// Every VM announces itself (a broadcast) so the switch learns it; waits until the FDB has them all.
    func learn(_ d: DaemonUnderTest, _ nics: [GuestNIC], vlan: [UInt16?]? = nil) async throws {
        try await offPool {
            for (i, g) in nics.enumerated() {
                try g.send(Self.probe(dst: TestFrames.broadcastMAC, src: g.mac, token: 1, seq: 1, vlan: vlan?[i] ?? nil))
            }
            let want = Set(nics.map { $0.mac.map { String(format: "%02x", $0) }.joined(separator: ":") })
            try waitUntil("every MAC learned", timeout: .seconds(5), poll: .milliseconds(20)) {
                Set(try d.json([FDBEntry].self, "fdb").map(\.mac.description)).isSuperset(of: want)
            }
        }
    }

    @Test("Shipped config: a learned flow takes the fast path (AF_PACKET sees none of it); spoofed sources on it are still dropped and counted; ACL, policer and a MAC move take entries out at once")
    func shippedConfigOffloads() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let list = ["a", "b", "c"].enumerated().map { i, r in
            VM(name: "x" + r, tap: names.name("x" + r), mac: String(format: "52:54:00:e7:00:%02x", i + 1))
        }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, cleanup: cleanup)
        let (a, b, c) = (n["xa"]!, n["xb"]!, n["xc"]!)
        let (tapA, tapB) = (list[0].tap, list[1].tap)
        try await learn(d, [a, b, c])
        for vm in list {
            let p = try await Self.path(d, vm.tap)
            #expect(p.text.hasPrefix("fast path (xdp);"), "\(vm.tap): \(p.text)\n\(d.log)")
        }
        let text = try await d.ctl("show")
        #expect(text.stdout.contains("path of \(tapA): fast path (xdp);"), "\(text.stdout)")

        // The first frame installs a → b; the next 50 take the fast path: none reaches AF_PACKET.
        #expect(try await Self.exchange(a, b, count: 1).count == 1)
        let before = try #require(try await d.port(named: tapA)).counters.framesIn
        let fastBefore = try await Self.path(d, tapA)
        #expect(fastBefore.text.contains("entries: 1 from"), "\(fastBefore.text)")
        #expect(try await Self.exchange(a, b, count: 50).count == 50)
        let after = try #require(try await d.port(named: tapA)).counters.framesIn
        let fastAfter = try await Self.path(d, tapA)
        #expect(fastAfter.fastIn - fastBefore.fastIn == 50, "\(fastAfter.text)")
        #expect(after - before == 50, "counters stay whole (fast + slow)")
        #expect((after - fastAfter.fastIn) == (before - fastBefore.fastIn), "a frame of the flow reached AF_PACKET")
        #expect(try await Self.path(d, tapB).fastOut >= 50)

        // Parity: a spoofed source on the same port and destination (c's MAC) misses the entry and is
        // dropped and counted by mac-spoof-guard; a's own frames keep the fast path.
        func spoofDrops() async throws -> UInt64 {
            try #require(try await d.port(named: tapA)).counters.drops.filter { $0.key.reason.hasPrefix("MAC spoofing") }.values.reduce(0, +)
        }
        let spoofBefore = try await spoofDrops()
        let spoofed = try await Self.exchange(a, b, count: 10, src: c.mac, timeout: .milliseconds(500))
        #expect(spoofed.isEmpty, "spoofed frames reached b")
        try await offPool {
            try waitUntil("10 spoof drops counted", timeout: .seconds(5), poll: .milliseconds(20)) {
                (try d.port(named: tapA)?.counters.drops.filter { $0.key.reason.hasPrefix("MAC spoofing") }.values.reduce(0, +) ?? 0) >= spoofBefore + 10
            }
        }
        #expect(try await spoofDrops() == spoofBefore + 10)
        #expect(try await Self.exchange(a, b, count: 5).count == 5)  // positive control
        #expect(try await Self.path(d, tapA).fastIn == fastAfter.fastIn + 5)

        // Parity with admission: frames the switch drops as malformed are dropped and counted
        // when they hit an entry too (the program hands them to the slow path).
        let malformed: [(String, [UInt8])] = [
            ("IPv4 longer than its frame", Self.ipv4(dst: b.mac, src: a.mac, proto: 17, Self.udp(5000, 5001, token: 7, seq: 0), totalLength: 300)),
            ("IPv4 version 5", { var f = Self.ipv4(dst: b.mac, src: a.mac, proto: 17, Self.udp(5000, 5001, token: 7, seq: 1)); f[14] = 0x55; return f }()),
            ("IPv6 longer than its frame", { var f = Self.ipv6(dst: b.mac, src: a.mac, next: 59, Self.magic); f[19] = 200; return f }()),
            ("truncated ARP", TestFrames.ethernet(dst: b.mac, src: a.mac, etherType: 0x0806, payload: [0, 1, 8, 0, 200, 200, 0, 2] + Array(repeating: 0, count: 40))),
        ]
        for (what, frame) in malformed {
            let total = try #require(try await d.port(named: tapA)).counters.drops.values.reduce(0, +)
            let fast = try await Self.path(d, tapA).fastIn
            try await offPool { try a.send(frame) }
            try await offPool {
                try waitUntil("\(what) dropped", timeout: .seconds(5), poll: .milliseconds(20)) {
                    (try d.port(named: tapA)?.counters.drops.values.reduce(0, +) ?? 0) > total
                }
            }
            #expect(try await Self.path(d, tapA).fastIn == fast, "\(what) took the fast path")
        }
        #expect(try await Self.exchange(a, b, count: 3).count == 3)  // positive control

        // An ACL rule on b: when `acl add` returns, b's entries are gone and the very next frame
        // meets the rule on the slow path.
        let add = try await d.ctl("acl", "add", tapB, "--direction", "in", "--ethertype", "0x88b5", "--action", "deny")
        try #require(add.status == 0, "acl add: \(add.stderr)")
        #expect(try await Self.path(d, tapB).text == "slow path: acl: port ACL")
        #expect(try await Self.path(d, tapA).text.contains("entries: 0 from, 0 to"))
        #expect(try await Self.exchange(a, b, count: 3, timeout: .milliseconds(500)).isEmpty, "the ACL did not see the frames")
        let hits = try await d.json(PortACLInfo.self, "acl", "list", tapB)
        #expect(hits.rules.map(\.hits) == [3], "\(hits)")
        #expect(try await d.ctl("acl", "del", tapB, "1").status == 0)
        #expect(try await Self.exchange(a, b, count: 5).count == 5)
        #expect(try await Self.path(d, tapB).text.hasPrefix("fast path (xdp);"))

        // A policer on a: its entries go before `port set` returns; back to the fast path without it.
        #expect(try await Self.exchange(a, b, count: 2).count == 2)
        #expect(try await Self.path(d, tapA).text.contains("entries: 1 from"))
        let police = try await d.ctl("port", "set", tapA, "ingress-frame-rate=100000")
        try #require(police.status == 0, "\(police.stderr)")
        #expect(try await Self.path(d, tapA).text == "slow path: policer: polices this port")
        let slowBefore = try await Self.path(d, tapA).fastIn
        #expect(try await Self.exchange(a, b, count: 5).count == 5)
        #expect(try await Self.path(d, tapA).fastIn == slowBefore, "a policed port's frames took the fast path")
        #expect(try await d.ctl("port", "reset", tapA, "ingress-frame-rate").status == 0)
        #expect(try await Self.path(d, tapA).text.hasPrefix("fast path (xdp);"))

        // MAC move: b's VM goes and its MAC comes back on a new port; a's frames follow it.
        #expect(try await Self.exchange(a, b, count: 3).count == 3)
        b.close()  // the guest stops first
        let stop = try await d.ctl("vm", "stop", list[1].name)
        try #require(stop.status == 0, "vm stop: \(stop.stdout) \(stop.stderr)")
        #expect(try await Self.path(d, tapA).text.contains("entries: 0 from"), "the entry to b outlived its port")
        let moved = VM(name: "xd", tap: names.name("xd"), mac: list[1].mac)
        let m = try await start(d, [moved], cleanup: cleanup)
        let dNIC = m["xd"]!
        try await learn(d, [dNIC])
        let followed = try await Self.exchange(a, dNIC, count: 20)
        #expect(followed.count == 20, "traffic did not follow the move")
        #expect(try await Self.path(d, tapA).text.contains("entries: 1 from"))
    }

    @Test("VLANs on the fast path: access → trunk gets the tag pushed, trunk → access has it popped, exactly as on the slow path; other VLANs stay apart")
    func vlanPushPop() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let list = ["a", "t", "b"].enumerated().map { i, r in
            VM(name: "v" + r, tap: names.name("v" + r), mac: String(format: "52:54:00:e7:01:%02x", i + 1))
        }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, extra: ["va": "vlan=10", "vt": "vlan-mode=trunk,allowed-vlans=10,20", "vb": "vlan=20"], cleanup: cleanup)
        let (a, t, b) = (n["va"]!, n["vt"]!, n["vb"]!)
        let (tapA, tapT, tapB) = (list[0].tap, list[1].tap, list[2].tap)
        try await learn(d, [a, t, t, b], vlan: [nil, 10, 20, nil])
        for tap in [tapA, tapT, tapB] {
            #expect(try await Self.path(d, tap).text.hasPrefix("fast path (xdp);"), "\(tap)\n\(d.log)")
        }

        // a (access 10) → t: the first frame installs the entry, the rest are tagged by the fast path.
        #expect(try await Self.exchange(a, t, count: 1).map(\.vlan) == [10])
        let aBefore = try await Self.path(d, tapA).fastIn
        let pushed = try await Self.exchange(a, t, count: 30)
        #expect(pushed.count == 30 && pushed.allSatisfy { $0.vlan == 10 }, "\(pushed)")
        #expect(try await Self.path(d, tapA).fastIn == aBefore + 30, "the fast path did not push the tag")

        // t → a tagged 10 and t → b tagged 20: delivered untagged, by the fast path.
        for (to, vid) in [(a, UInt16(10)), (b, 20)] {
            #expect(try await Self.exchange(t, to, count: 1, vlan: vid).map(\.vlan) == [nil])
            let tBefore = try await Self.path(d, tapT).fastIn
            let popped = try await Self.exchange(t, to, count: 30, vlan: vid)
            #expect(popped.count == 30 && popped.allSatisfy { $0.vlan == nil }, "VLAN \(vid): \(popped)")
            #expect(try await Self.path(d, tapT).fastIn == tBefore + 30, "VLAN \(vid): the fast path did not pop the tag")
        }

        // Isolation holds: t's frame tagged 10 to b (VLAN 20) never reaches b, on either path.
        #expect(try await Self.exchange(t, b, count: 5, vlan: 10, timeout: .milliseconds(500)).isEmpty)
        // A VLAN change takes the port's entries out at once; frames follow the new VLAN.
        #expect(try await d.ctl("port", "set", tapA, "vlan=20").status == 0)
        #expect(try await Self.path(d, tapA).text.contains("entries: 0 from, 0 to"))
        try await learn(d, [a])
        let now20 = try await Self.exchange(a, t, count: 10)
        #expect(now20.count == 10 && now20.allSatisfy { $0.vlan == 20 }, "\(now20)")
    }

    /// IPv4 (no options, header checksum set) carrying `l4` with protocol `proto`; `totalLength`
    /// overrides the header's length (a lying packet).
    static func ipv4(dst: [UInt8], src: [UInt8], proto: UInt8, _ l4: [UInt8], totalLength: Int? = nil) -> [UInt8] {
        let total = totalLength ?? 20 + l4.count
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 17, 0, 1, 10, 17, 0, 2]
        var sum: UInt32 = 0
        for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        ip[10] = UInt8(~sum >> 8 & 0xFF); ip[11] = UInt8(~sum & 0xFF)
        return TestFrames.ethernet(dst: dst, src: src, etherType: 0x0800, payload: ip + l4)
    }

    /// UDP (checksum 0: none, as IPv4 allows) from `sport` with magic+token+seq after `head`.
    static func udp(_ sport: UInt16, _ dport: UInt16, head: [UInt8] = [], token: UInt32, seq: UInt32) -> [UInt8] {
        let payload = head + magic + bytes(token) + bytes(seq)
        let n = 8 + payload.count
        return [UInt8(sport >> 8), UInt8(sport & 0xFF), UInt8(dport >> 8), UInt8(dport & 0xFF), UInt8(n >> 8), UInt8(n & 0xFF), 0, 0] + payload
    }

    /// IPv6 (fe80::1 → fe80::2, hop limit 255) carrying `l4` with next header `next`.
    static func ipv6(dst: [UInt8], src: [UInt8], next: UInt8, _ l4: [UInt8]) -> [UInt8] {
        var ip: [UInt8] = [0x60, 0, 0, 0, UInt8(l4.count >> 8), UInt8(l4.count & 0xFF), next, 255]
        ip += [0xfe, 0x80] + Array(repeating: 0, count: 13) + [1] + [0xfe, 0x80] + Array(repeating: 0, count: 13) + [2]
        return TestFrames.ethernet(dst: dst, src: src, etherType: 0x86DD, payload: ip + l4)
    }

    /// Whether `nic` receives a frame carrying `token` within `timeout`.
    static func arrives(_ nic: GuestNIC, token: UInt32, timeout: Duration) async throws -> Bool {
        let needle = magic + bytes(token)
        return try await offPool {
            try nic.receive(timeout: timeout, where: { f in
                f.count >= needle.count && (0...(f.count - needle.count)).contains { Array(f[$0..<($0 + needle.count)]) == needle }
            }) != nil
        }
    }

    @Test("dhcp-guard and router-guard compiled into the fast path: a guarded port stays on it, and its DHCP offers, router advertisements, redirects and unreadable packets on an offloaded flow are still dropped and counted")
    func guardsCompiled() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let list = ["a", "b"].enumerated().map { i, r in
            VM(name: "g" + r, tap: names.name("g" + r), mac: String(format: "52:54:00:e7:02:%02x", i + 1))
        }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, extra: ["ga": "dhcp-guard=on,router-guard=on"], cleanup: cleanup)
        let (a, b) = (n["ga"]!, n["gb"]!)
        let tapA = list[0].tap
        try await learn(d, [a, b])
        let path = try await Self.path(d, tapA)
        #expect(path.text.hasPrefix("fast path (xdp);") && path.text.hasSuffix("checked in the fast path: DHCP server messages, router advertisements and redirects"),
                "\(path.text)\n\(d.log)")

        // Ordinary UDP from a installs a → b; the next 20 take the fast path.
        func udp(_ count: UInt32) async throws -> Int {
            let token = UInt32.random(in: 1...UInt32.max)
            var got = 0
            for k in 0..<count {
                try await offPool { try a.send(Self.ipv4(dst: b.mac, src: a.mac, proto: 17, Self.udp(5000, 5001, token: token, seq: k))) }
                if try await Self.arrives(b, token: token, timeout: .seconds(2)) { got += 1 }
            }
            return got
        }
        #expect(try await udp(1) == 1)
        let before = try await Self.path(d, tapA).fastIn
        #expect(try await udp(20) == 20)
        #expect(try await Self.path(d, tapA).fastIn == before + 20, "ordinary UDP from the guarded port did not take the fast path")

        func drops() async throws -> UInt64 {
            try #require(try await d.port(named: tapA)).counters.drops.values.reduce(0, +)
        }
        // Each attack on the offloaded flow a → b: never delivered, dropped and counted on the slow path.
        let offer = [UInt8(2), 1, 6, 0] + Array(repeating: 0, count: 236) + [0x63, 0x82, 0x53, 0x63, 53, 1, 2, 255]
        let attacks: [(String, (UInt32) -> [UInt8])] = [
            ("DHCPv4 offer", { t in Self.ipv4(dst: b.mac, src: a.mac, proto: 17, Self.udp(67, 68, head: offer, token: t, seq: 0)) }),
            ("DHCPv6 advertise", { t in Self.ipv6(dst: b.mac, src: a.mac, next: 17, Self.udp(547, 546, head: [2, 0, 0, 1], token: t, seq: 0)) }),
            ("ICMPv6 router advertisement", { t in Self.ipv6(dst: b.mac, src: a.mac, next: 58, [134, 0, 0, 0, 64, 0, 0, 0x1e] + Array(repeating: 0, count: 8) + Self.magic + Self.bytes(t)) }),
            ("ICMPv6 redirect", { t in Self.ipv6(dst: b.mac, src: a.mac, next: 58, [137, 0, 0, 0] + Array(repeating: 0, count: 36) + Self.magic + Self.bytes(t)) }),
            ("ICMPv4 redirect", { t in Self.ipv4(dst: b.mac, src: a.mac, proto: 1, [5, 1, 0, 0, 10, 17, 0, 9] + Self.magic + Self.bytes(t)) }),
            ("IPv4 whose length runs past the frame", { t in Self.ipv4(dst: b.mac, src: a.mac, proto: 17, Self.udp(5000, 5001, token: t, seq: 0), totalLength: 400) }),
        ]
        for (what, make) in attacks {
            let fast = try await Self.path(d, tapA).fastIn
            let dropped = try await drops()
            let token = UInt32.random(in: 1...UInt32.max)
            let frame = make(token)
            try await offPool { try a.send(frame) }
            #expect(try await !Self.arrives(b, token: token, timeout: .milliseconds(300)), "\(what) reached b")
            try await offPool {
                try waitUntil("\(what) counted as a drop", timeout: .seconds(5), poll: .milliseconds(20)) {
                    (try d.port(named: tapA)?.counters.drops.values.reduce(0, +) ?? 0) > dropped
                }
            }
            #expect(try await Self.path(d, tapA).fastIn == fast, "\(what) took the fast path")
        }
        let reasons = try #require(try await d.port(named: tapA)).counters.drops.keys.map(\.reason)
        #expect(reasons.contains { $0.hasPrefix("DHCP server message") } && reasons.contains { $0.hasPrefix("router advertisement or redirect") }, "\(reasons)")
        // Positive control: the flow itself still takes the fast path.
        let last = try await Self.path(d, tapA).fastIn
        #expect(try await udp(5) == 5)
        #expect(try await Self.path(d, tapA).fastIn == last + 5)
    }
}
