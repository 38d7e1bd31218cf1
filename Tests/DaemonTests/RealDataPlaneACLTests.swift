import ControlProtocol
import FakeVM
import Foundation
import Testing
import TestSupport

/// Port ACLs, storm control and policing (issue 14 items 1-3) on the real daemon with ``FakeVM``s
/// attached to TAPs as QEMU attaches, driven through `tapswitchctl`.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct RealDataPlaneACLTests {
    struct VM {
        let name: String
        let tap: String
        let mac: String
    }

    func vms(_ names: UniqueNames, _ roles: [String], base: Int) -> [VM] {
        roles.enumerated().map { i, role in
            VM(name: "l" + role, tap: names.name(role), mac: String(format: "52:54:00:e4:%02x:%02x", base, i + 1))
        }
    }

    func start(_ d: DaemonUnderTest, _ list: [VM], cleanup: Cleanup) async throws -> [String: GuestNIC] {
        var nics: [String: GuestNIC] = [:]
        for vm in list {
            cleanup.deleteLink(vm.tap)
            let r = try await d.ctl("vm", "start", vm.name, "--nic", "\(vm.tap),mac=\(vm.mac)")
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

    static let magic = Array("tswdacl!".utf8)

    static func bytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    static func word(_ f: [UInt8], _ i: Int) -> UInt32 {
        UInt32(f[i]) << 24 | UInt32(f[i + 1]) << 16 | UInt32(f[i + 2]) << 8 | UInt32(f[i + 3])
    }

    /// IPv4/TCP from 10.14.0.1 to 10.14.0.2, port 40000 to `port`, `flags`, payload magic+token+seq.
    static func tcp(dst: [UInt8], src: [UInt8], port: UInt16, flags: UInt8, token: UInt32, seq: UInt32) -> [UInt8] {
        let payload = magic + bytes(token) + bytes(seq)
        let tcp: [UInt8] = [0x9c, 0x40, UInt8(port >> 8), UInt8(port & 0xff)] + bytes(1) + bytes(0) + [0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
        let total = 20 + tcp.count + payload.count
        let ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 14, 0, 1, 10, 14, 0, 2]
        return TestFrames.ethernet(dst: dst, src: src, etherType: 0x0800, payload: ip + tcp + payload)
    }

    /// (destination port, token, seq) of a test TCP frame, nil for anything else.
    static func parseTCP(_ f: [UInt8]) -> (port: UInt16, token: UInt32, seq: UInt32)? {
        guard f.count >= 14 + 40 + 16, f[12] == 0x08, f[13] == 0x00, f[23] == 6, Array(f[54..<62]) == magic else { return nil }
        return (UInt16(f[36]) << 8 | UInt16(f[37]), word(f, 62), word(f, 66))
    }

    /// A probe of `size` bytes (EtherType 0x88b5) with magic+token+seq.
    static func probe(dst: [UInt8], src: [UInt8], token: UInt32, seq: UInt32, size: Int = 64) -> [UInt8] {
        let payload = magic + bytes(token) + bytes(seq)
        return TestFrames.ethernet(dst: dst, src: src, etherType: 0x88b5, payload: payload + Array(repeating: 0, count: max(0, size - 14 - payload.count)))
    }

    static func parseProbe(_ f: [UInt8]) -> (token: UInt32, seq: UInt32)? {
        guard f.count >= 30, f[12] == 0x88, f[13] == 0xb5, Array(f[14..<22]) == magic else { return nil }
        return (word(f, 22), word(f, 26))
    }

    /// Frames matching `parse` at `nic` within `timeout`, stopping once `until` holds.
    static func collect<T>(_ nic: GuestNIC, timeout: Duration, parse: ([UInt8]) -> T?, until: ([T]) -> Bool) throws -> [T] {
        var got: [T] = []
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !until(got) {
            guard let f = try nic.receive(timeout: ContinuousClock.now.duration(to: deadline), where: { parse($0) != nil }),
                  let p = parse(f) else { break }
            got.append(p)
        }
        return got
    }

    @Test("ACL from tapswitchctl: TCP 22 denied inbound while 80 passes, an established-only rule, count rules' counters, clear errors, rules kept across a restart")
    func aclOnTAPs() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["a", "b", "c"], base: 1)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, cleanup: cleanup)
        let (a, b, c) = (n["la"]!, n["lb"]!, n["lc"]!)
        let (tapB, tapC) = (list[1].tap, list[2].tap)
        // b and c announce themselves, so a's frames to them are not flooded to the other.
        try await offPool {
            for g in [b, c] { try g.send(Self.probe(dst: TestFrames.broadcastMAC, src: g.mac, token: 1, seq: 1)) }
        }
        try await offPool {
            try waitUntil("b's and c's MACs learned", timeout: .seconds(5), poll: .milliseconds(20)) {
                Set(try d.json([FDBEntry].self, "fdb").map(\.mac.description)).isSuperset(of: [list[1].mac, list[2].mac])
            }
        }

        for args in [["--direction", "in", "--proto", "tcp", "--dst-port", "22", "--action", "deny"],
                     ["--direction", "in", "--proto", "tcp", "--dst-port", "80", "--action", "count"]] {
            let r = try await d.ctl(["acl", "add", tapB] + args)
            try #require(r.status == 0, "acl add: \(r.stderr)")
        }
        for args in [["--direction", "in", "--proto", "tcp", "--established", "--action", "allow"],
                     ["--direction", "in", "--proto", "tcp", "--action", "deny"]] {
            let r = try await d.ctl(["acl", "add", tapC] + args)
            try #require(r.status == 0, "acl add: \(r.stderr)")
        }

        /// Sends 20 SYNs to 22 then 20 to 80 (b), 10 SYNs then 10 ACKs to 5000 (c); what b and c got.
        func exchange(_ token: UInt32) async throws -> String? {
            try await offPool { () throws -> String? in
                for k: UInt32 in 0..<20 { try a.send(Self.tcp(dst: b.mac, src: a.mac, port: 22, flags: 0x02, token: token, seq: k)) }
                for k: UInt32 in 0..<20 { try a.send(Self.tcp(dst: b.mac, src: a.mac, port: 80, flags: 0x02, token: token, seq: 100 + k)) }
                for k: UInt32 in 0..<10 { try a.send(Self.tcp(dst: c.mac, src: a.mac, port: 5000, flags: 0x02, token: token, seq: 200 + k)) }
                for k: UInt32 in 0..<10 { try a.send(Self.tcp(dst: c.mac, src: a.mac, port: 5000, flags: 0x10, token: token, seq: 300 + k)) }
                let atB = try Self.collect(b, timeout: .seconds(5), parse: { f in Self.parseTCP(f).flatMap { $0.token == token ? $0 : nil } }) {
                    $0.filter { $0.port == 80 }.count == 20
                }
                let atC = try Self.collect(c, timeout: .seconds(5), parse: { f in Self.parseTCP(f).flatMap { $0.token == token ? $0 : nil } }) {
                    $0.filter { $0.seq >= 300 }.count == 10
                }
                // Frames were sent in order: once the last allowed ones arrived, the denied ones had their chance.
                if atB.filter({ $0.port == 80 }).count != 20 { return "b got \(atB.filter { $0.port == 80 }.count) of 20 TCP 80 frames" }
                if atB.contains(where: { $0.port == 22 }) { return "b got TCP 22 frames" }
                if atC.filter({ $0.seq >= 300 }).count != 10 { return "c got \(atC.filter { $0.seq >= 300 }.count) of 10 ACKs" }
                if atC.contains(where: { $0.seq < 300 }) { return "c got a SYN through its established-only rule" }
                return nil
            }
        }
        let first = try await exchange(UInt32.random(in: 1...UInt32.max))
        #expect(first == nil, "\(first ?? "")\n\(d.log)")

        let listB = try await d.json(PortACLInfo.self, "acl", "list", tapB)
        #expect(listB.enforced && listB.rules.map(\.id) == [1, 2] && listB.rules.map(\.hits) == [20, 20], "\(listB)")
        #expect(listB.rules.first?.match == ["proto=tcp", "dst-port=22"] && listB.rules.first?.action == "deny")
        let listC = try await d.json(PortACLInfo.self, "acl", "list", tapC)
        #expect(listC.rules.map(\.hits) == [10, 10], "\(listC)")
        let text = try await d.ctl("acl", "list", tapB)
        #expect(text.stdout.contains("proto=tcp dst-port=22") && text.stdout.contains("deny"), "\(text.stdout)")
        let port = try #require(try await d.port(named: tapB))
        #expect(port.counters.drops.filter { $0.key.direction == .egress && $0.key.reason.hasPrefix("denied by an ACL rule") }.values.reduce(0, +) == 20)

        // Bad rules: one line naming the flag, nothing changed.
        let bad = try await d.ctl("acl", "add", tapB, "--direction", "in", "--proto", "tcp", "--dst-port", "70000", "--action", "deny")
        #expect(bad.status == 2 && bad.stderr.contains("--dst-port=70000: expected a port 0-65535"), "\(bad.stderr)")
        let noProto = try await d.ctl("acl", "add", tapB, "--direction", "in", "--dst-port", "22", "--action", "deny")
        #expect(noProto.status == 2 && noProto.stderr.contains("dst-port needs proto=tcp or proto=udp"), "\(noProto.stderr)")
        let gone = try await d.ctl("acl", "del", tapB, "99")
        #expect(gone.status == 1 && gone.stderr.contains("no ACL rule 99"), "\(gone.stderr)")
        let wire = try await d.ctl("acl", "add", "nosuchport", "--direction", "in", "--action", "deny")
        #expect(wire.status == 1 && wire.stderr.contains("nosuchport"), "\(wire.stderr)")

        // Restart: the rules come back with the re-adopted port and are enforced (counters start at zero).
        #expect(try await d.stop() == 0)
        try await d.start()
        _ = try await d.waitForEvents("re-adoption") { evs in
            list.allSatisfy { vm in evs.contains { $0.kind == .nicConnect && $0.portName == vm.tap && $0.restore } }
        }
        let again = try await d.json(PortACLInfo.self, "acl", "list", tapB)
        #expect(again.rules.map(\.match) == listB.rules.map(\.match) && again.rules.map(\.hits) == [0, 0], "\(again)")
        let second = try await exchange(UInt32.random(in: 1...UInt32.max))
        #expect(second == nil, "\(second ?? "")\n\(d.log)")

        // Deleting the deny lets TCP 22 through.
        let del = try await d.ctl("acl", "del", tapB, "1")
        #expect(del.status == 0, "\(del.stderr)")
        let token = UInt32.random(in: 1...UInt32.max)
        let open = try await offPool { () throws -> Int in
            for k: UInt32 in 0..<5 { try a.send(Self.tcp(dst: b.mac, src: a.mac, port: 22, flags: 0x02, token: token, seq: k)) }
            return try Self.collect(b, timeout: .seconds(5), parse: { f in Self.parseTCP(f).flatMap { $0.token == token ? $0 : nil } }) {
                $0.count == 5
            }.count
        }
        #expect(open == 5)
    }

    /// Frames the kernel dropped on `taps`' full receive rings so far.
    func ringFull(_ d: DaemonUnderTest, _ taps: [String]) async throws -> UInt64 {
        var total: UInt64 = 0
        for tap in taps {
            let port = try #require(try await d.port(named: tap))
            total += port.counters.drops.filter { $0.key.reason.hasPrefix("receive ring full") }.values.reduce(0, +)
        }
        return total
    }

    @Test("A broadcast storm from one VM is held to storm-broadcast while two other VMs exchange traffic without loss")
    func broadcastStorm() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["s", "x", "y"], base: 2)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, cleanup: cleanup)
        let (s, x, y) = (n["ls"]!, n["lx"]!, n["ly"]!)
        let limit = 200
        let set = try await d.ctl("port", "set", list[0].tap, "storm-broadcast=\(limit)")
        try #require(set.status == 0, "\(set.stderr)")
        // Rates a debug build keeps up with on a loaded 2-CPU CI machine running the suites in
        // parallel: the storm at 15 times the limit, each peer at 1000 frames/s. A machine that stalls the switch longer than a receive
        // ring holds (1024 frames, a second here) loses peer frames as "receive ring full" on the
        // peers' own ports, storm or not: such an attempt is repeated (at most 4 in all); any other
        // loss fails at once.
        let perPeer: UInt32 = 2000
        let stormRate = 3_000.0  // 15 times the limit; 10,000 overran the peers' rings in CI's parallel run
        let stormSeconds = 2.5  // beyond the peers' 2 s of sending
        var attempt = 0
        while true {
        attempt += 1
        let token = UInt32.random(in: 1...UInt32.max)
        let ringFullBefore = try await ringFull(d, [list[1].tap, list[2].tap])
        // x and y learn each other first.
        try await offPool {
            try x.send(Self.probe(dst: TestFrames.broadcastMAC, src: x.mac, token: token, seq: 9_000_000))
            try y.send(Self.probe(dst: TestFrames.broadcastMAC, src: y.mac, token: token, seq: 9_000_001))
        }


        /// Receives at `nic` until `count` frames from `peer` arrived (or 15 s); returns them and the broadcasts from s.
        @Sendable func receive(_ nic: GuestNIC, from peer: [UInt8]) throws -> (peer: Int, storm: Int) {
            var fromPeer = Set<UInt32>(), storm = 0
            let deadline = ContinuousClock.now + .seconds(15)
            while ContinuousClock.now < deadline, fromPeer.count < Int(perPeer) {
                guard let f = try nic.receive(timeout: .milliseconds(200), where: { Self.parseProbe($0)?.token == token }) else { continue }
                let src = Array(f[6..<12])
                if src == s.mac { storm += 1 } else if src == peer, let p = Self.parseProbe(f), p.seq < 9_000_000 { fromPeer.insert(p.seq) }
            }
            // Storm frames still queued after the peer's last one.
            while let f = try nic.receive(timeout: .milliseconds(300), where: { Self.parseProbe($0)?.token == token }) {
                if Array(f[6..<12]) == s.mac { storm += 1 }
            }
            return (fromPeer.count, storm)
        }
        /// Sends `perPeer` frames to `peer` at about 1000 frames/s (paced by the clock, not by sleeps' accuracy).
        @Sendable func send(_ nic: GuestNIC, to peer: [UInt8]) throws {
            let start = ContinuousClock.now
            var sent: UInt32 = 0
            while sent < perPeer {
                let due = UInt32(min(Double(perPeer), (ContinuousClock.now - start) / .milliseconds(1)))
                while sent < due {
                    try nic.send(Self.probe(dst: peer, src: nic.mac, token: token, seq: sent))
                    sent += 1
                }
                Thread.sleep(forTimeInterval: 0.0005)
            }
        }

        async let atY = offPool { try receive(y, from: x.mac) }
        async let atX = offPool { try receive(x, from: y.mac) }
        async let fromX: Void = offPool { try send(x, to: y.mac) }
        async let fromY: Void = offPool { try send(y, to: x.mac) }
        let storm = try await offPool { () throws -> (sent: Int, seconds: Double) in
            let start = ContinuousClock.now
            var sent = 0
            let frame = Self.probe(dst: TestFrames.broadcastMAC, src: s.mac, token: token, seq: 1)
            while (ContinuousClock.now - start) < .seconds(stormSeconds) {
                let due = Int((ContinuousClock.now - start) / .seconds(1) * stormRate)
                while sent < due { try s.send(frame); sent += 1 }
                Thread.sleep(forTimeInterval: 0.0005)
            }
            return (sent, (ContinuousClock.now - start) / .seconds(1))
        }
        try await fromX
        try await fromY
        let (y1, x1) = (try await atY, try await atX)
        let show = try await d.ctl("show")
        let lost = y1.peer < Int(perPeer) || x1.peer < Int(perPeer)
        let ringLoss = try await ringFull(d, [list[1].tap, list[2].tap]) - ringFullBefore
        let onlyRing = lost && ringLoss > 0 && ringLoss >= UInt64(2 * Int(perPeer) - y1.peer - x1.peer)
        if onlyRing && attempt < 4 { continue }
        #expect(!lost, "attempt \(attempt): x→y \(y1.peer), y→x \(x1.peer) of \(perPeer)\n\(show.stdout)")
        // At most `limit` per window; windows are disjoint and at least a second long, so a storm of D
        // seconds touches at most ceil(D) + 1 of them (the switch sees it a little later than sent).
        let windows = Int(storm.seconds.rounded(.up)) + 1
        for (who, got) in [("x", x1.storm), ("y", y1.storm)] {
            #expect(got <= limit * windows && got >= limit * Int(storm.seconds.rounded(.down)),
                    "\(who) got \(got) broadcasts of \(storm.sent) sent in \(storm.seconds) s (limit \(limit)/s)")
        }
        let dropped = try #require(try await d.port(named: list[0].tap)).counters.drops
            .filter { $0.key.reason.hasPrefix("broadcast storm limit") }.values.reduce(0, +)
        #expect(dropped > 0 && dropped < UInt64(storm.sent) * UInt64(attempt))
        break
        }
    }

    @Test("An ingress policer holds a VM sending at twice the rate to the rate, within 10%")
    func ingressPolicer() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let list = vms(UniqueNames(), ["p", "q"], base: 3)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await start(d, list, cleanup: cleanup)
        let (p, q) = (n["lp"]!, n["lq"]!)
        let set = try await d.ctl("port", "set", list[0].tap, "ingress-rate=8mbit")  // 1,000,000 bytes/s
        try #require(set.status == 0, "\(set.stderr)")
        let get = try await d.json([PortInfo].self, "port", "get", list[0].tap)
        #expect(get.first?.settings == ["ingress-rate=8mbit"])
        let token = UInt32.random(in: 1...UInt32.max)
        try await offPool { try q.send(Self.probe(dst: TestFrames.broadcastMAC, src: q.mac, token: token, seq: 9_000_000)) }
        // 1000-byte frames at 2000 frames/s (16 Mbit/s) for 3 s.
        let seconds = 3.0, size = 1000, rate = 2000.0
        async let received = offPool { () throws -> Int in
            var got = 0
            while let _ = try q.receive(timeout: .milliseconds(500), where: { Self.parseProbe($0)?.token == token }) { got += 1 }
            return got
        }
        let sent = try await offPool { () throws -> Int in
            let start = ContinuousClock.now
            var sent = 0
            while (ContinuousClock.now - start) < .seconds(seconds) {
                let due = Int((ContinuousClock.now - start) / .seconds(1) * rate)
                while sent < due {
                    try p.send(Self.probe(dst: q.mac, src: p.mac, token: token, seq: UInt32(sent), size: size))
                    sent += 1
                }
                Thread.sleep(forTimeInterval: 0.0005)
            }
            return sent
        }
        let got = try await received
        let expected = 1_000_000.0 * seconds / Double(size)  // frames the policer lets through in `seconds`
        #expect(Double(sent) > expected * 1.8, "the sender kept its rate: \(sent) frames")
        #expect(abs(Double(got) - expected) <= expected * 0.1, "delivered \(got) frames, expected \(Int(expected)) ± 10% (sent \(sent))\n\(d.log)")
        let dropped = try #require(try await d.port(named: list[0].tap)).counters.drops
            .filter { $0.key.reason.hasPrefix("ingress rate exceeded") }.values.reduce(0, +)
        #expect(Int(dropped) + got == sent, "every frame delivered or counted: \(dropped) dropped, \(got) delivered, \(sent) sent")
    }
}
