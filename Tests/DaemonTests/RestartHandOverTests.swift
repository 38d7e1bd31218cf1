import ControlProtocol
import FakeVM
import Foundation
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
import Locking
#endif

/// Issue 12 item 7: what a planned restart (SIGUSR2) hands over besides the VM TAPs' sockets, on
/// real devices: the internal ports' queues (the interface, its index and frames queued for the
/// switch survive) and the XDP fast path (attached again; learned flows are offloaded again).
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct RestartHandOverTests {
    static let macH = "52:54:00:d1:00:0c"

    /// Waits for the restarted image's `ready` line after a SIGUSR2 (the log then holds two).
    func restartInPlace(_ d: DaemonUnderTest) async throws {
        let readyBefore = d.logText.components(separatedBy: " ready ").count
        d.signal(SIGUSR2)
        let tookOver = try await waitUntil(20) {
            d.logText.contains("took over receive sockets") && d.logText.components(separatedBy: " ready ").count > readyBefore
        }
        try #require(tookOver, "the restarted image did not report the hand-over\n\(d.log)")
        #expect(d.isRunning, "the same process runs on (exec)")
    }

    @Test("item 7: an internal port's queue is handed over on SIGUSR2: same interface (index), frames the host sent across the restart all arrive, once")
    func internalPortHandedOver() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let tapA = names.name("a0"), host = names.name("h0")
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        cleanup.deleteLink(tapA)
        cleanup.deleteLink(host)
        let started = try await d.ctl("vm", "start", "va", "--nic", "\(tapA),mac=\(RealDataPlaneTests.macA)")
        try #require(started.status == 0, "vm start: \(started.stderr)\n\(d.log)")
        let added = try await d.ctl("port", "add-internal", host, "--mac", Self.macH)
        try #require(added.status == 0, "port add-internal: \(added.stderr)\n\(d.log)")
        let a = try GuestNIC(tap: tapA, mac: RealDataPlaneTests.macA)
        cleanup.add("detach the FakeVM") { a.close() }
        _ = try await d.waitForEvents(.nicConnect, port: tapA)
        let indexBefore = if_nametoindex(host)
        try #require(indexBefore != 0)

        // The host side of the internal port: frames sent on its interface go to the switch.
        let hostSocket = try RawLinkSocket(interface: host)
        cleanup.add("close the host socket") { hostSocket.close() }
        let hostMAC = try #require(TestFrames.parseMAC(Self.macH))
        let token = UInt32.random(in: 1...UInt32.max)
        // Positive control: the path host -> switch -> VM works before the restart.
        let crossed = try await offPool { () throws -> Bool in
            try hostSocket.send(Probe.frame(dst: a.mac, src: hostMAC, token: token, seq: 0))
            return try a.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token } != nil
        }
        try #require(crossed, "host -> VM through the internal port before the restart\n\(d.log)")

        let flow = PacedFlow()
        flow.start(sender: { seq in try hostSocket.send(Probe.frame(dst: a.mac, src: hostMAC, token: token, seq: seq)) },
                   receiver: { try a.receive(timeout: .milliseconds(50)) { Probe.parse($0)?.token == token }.flatMap(Probe.parse)?.seq },
                   firstSeq: 1)
        cleanup.add("stop the flow") { try flow.halt() }
        let flowing = try await waitUntil(10) { flow.received.withLock { $0.count } >= 50 }
        try #require(flowing, "the host -> VM flow never got going: \(flow.errors.withLock { $0 })\n\(d.log)")

        let sentAtRestart = flow.sent.load(ordering: .acquiring)
        try await restartInPlace(d)
        #expect(d.logText.contains("sockets=4"), "the VM TAP's three sockets and the internal port's queue were taken over\n\(d.log)")
        let resumed = try await waitUntil(10) { flow.received.withLock { $0.contains { $0 >= sentAtRestart + 100 } } }
        #expect(resumed, "no frame sent well after the restart arrived; errors: \(flow.errors.withLock { $0 })\n\(d.log)")
        flow.senderStopping.store(true, ordering: .releasing)
        _ = try await waitUntil(5) { flow.finished.load(ordering: .acquiring) >= 1 }
        let lastSent = flow.sent.load(ordering: .acquiring)
        _ = try await waitUntil(5) { flow.received.withLock { $0.contains(lastSent) } }
        try await offPool { try flow.halt() }
        #expect(flow.errors.withLock { $0 }.isEmpty, "the host kept sending on the same interface: \(flow.errors.withLock { $0 })")

        let seqs = flow.received.withLock { $0 }
        #expect(Set(seqs).count == seqs.count, "no frame delivered twice")
        let got = Set(seqs)
        let missing = (1...lastSent).filter { !got.contains($0) }
        #expect(missing.isEmpty, "\(missing.count) of \(lastSent) frames lost across the restart: \(missing.prefix(20))\n\(d.log)")
        #expect(if_nametoindex(host) == indexBefore, "the internal port's interface is the same one (not created again)")
        let port = try await d.port(named: host)
        #expect(port?.mac?.description == Self.macH, "the internal port is back with its MAC: \(String(describing: port))")
        print("RestartHandOver internal port: \(lastSent) frames from the host at 1 per 2 ms, \(seqs.count) received, \(missing.count) lost")
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    @Test("item 7: with offload = xdp, after SIGUSR2 the fast path is attached again, a learned flow is offloaded again (AF_PACKET no longer sees it) and forwarding continues")
    func fastPathAfterRestart() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let taps = RealDataPlaneTests.Taps()
        // No extension that must see every frame (the shipped guards do, for now), so learned flows may be offloaded.
        let d = try DaemonUnderTest(config: .text("[switch]\nname = \"xdp-restart\"\noffload = \"xdp\"\n[extensions]\nenable = []\n"), cleanup: cleanup)
        try await d.start()
        try #require(d.logText.contains("offload xdp: learned unicast"), "the fast path did not load (scripts/build-bpf)\n\(d.log)")
        let (a, b) = try await RealDataPlaneTests().startConnectedPair(d, taps, cleanup: cleanup)
        let sniffer = try RawLinkSocket(interface: taps.a)
        cleanup.add("close the sniffer") { sniffer.close() }

        let before = try await offloadedFlow(a, b, sniffer: sniffer)
        #expect(before == nil, "before the restart: \(before ?? "")\n\(d.log)")
        let offloadBefore = try await d.port(named: taps.a)?.offload
        #expect(offloadBefore?.hasPrefix("fast path") == true, "\(offloadBefore ?? "no port")")

        try await restartInPlace(d)
        #expect(d.logText.components(separatedBy: "offload xdp: learned unicast").count == 3, "the new image loaded the fast path\n\(d.log)")
        let offload = try await d.port(named: taps.a)?.offload
        #expect(offload?.hasPrefix("fast path") == true, "\(offload ?? "no port")")
        let after = try await offloadedFlow(a, b, sniffer: sniffer)
        #expect(after == nil, "after the restart: \(after ?? "")\n\(d.log)")

        a.close()
        b.close()
        try await d.waitForEvents("nic-disconnect on both after the restart") { evs in
            [taps.a, taps.b].allSatisfy { tap in evs.contains { $0.kind == .nicDisconnect && $0.portName == tap } }
        }
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    /// B then A introduce themselves (the switch learns both; the first A -> B frame installs the
    /// flow), then 20 A -> B frames must reach B without passing AF_PACKET on A's TAP (redirected
    /// by XDP, so the sniffer on A's TAP sees none). Positive control: A's broadcast is seen by the
    /// sniffer. Returns what failed, nil when the flow was offloaded.
    func offloadedFlow(_ a: GuestNIC, _ b: GuestNIC, sniffer: RawLinkSocket) async throws -> String? {
        let token = UInt32.random(in: 1...UInt32.max)
        return try await offPool { () throws -> String? in
            func seen(_ seqs: ClosedRange<UInt32>, within timeout: Duration) throws -> Set<UInt32> {
                var found: Set<UInt32> = []
                let end = ContinuousClock.now + timeout
                while ContinuousClock.now < end, found.count < seqs.count {
                    guard let f = try sniffer.receive(timeout: .milliseconds(50)), let p = Probe.parse(f), p.token == token,
                          seqs.contains(p.seq) else { continue }
                    found.insert(p.seq)
                }
                return found
            }
            try a.send(Probe.frame(dst: TestFrames.broadcastMAC, src: a.mac, token: token, seq: 0))
            guard try seen(0...0, within: .seconds(3)) == [0] else { return "the sniffer on \(a.tap) did not see A's broadcast" }
            guard try b.receive(timeout: .seconds(3), where: { Probe.parse($0)?.token == token }) != nil else { return "A's broadcast did not reach B" }
            try b.send(Probe.frame(dst: a.mac, src: b.mac, token: token, seq: 1))
            guard try a.receive(timeout: .seconds(3), where: { Probe.parse($0)?.seq == 1 && Probe.parse($0)?.token == token }) != nil else {
                return "B -> A did not arrive"
            }
            try a.send(Probe.frame(dst: b.mac, src: a.mac, token: token, seq: 2))
            guard try b.receive(timeout: .seconds(3), where: { Probe.parse($0)?.seq == 2 && Probe.parse($0)?.token == token }) != nil else {
                return "the first A -> B frame did not arrive"
            }
            _ = try seen(2...2, within: .milliseconds(300))  // the slow path's copy, if the sniffer sees it
            for seq in UInt32(10)..<30 { try a.send(Probe.frame(dst: b.mac, src: a.mac, token: token, seq: seq)) }
            var arrived: Set<UInt32> = []
            let end = ContinuousClock.now + .seconds(3)
            while arrived.count < 20, ContinuousClock.now < end {
                if let f = try b.receive(timeout: .milliseconds(100), where: { Probe.parse($0)?.token == token }), let p = Probe.parse(f) {
                    arrived.insert(p.seq)
                }
            }
            guard arrived.count == 20 else { return "only \(arrived.count) of 20 A -> B frames reached B" }
            let slow = try seen(10...29, within: .milliseconds(300))
            guard slow.isEmpty else { return "\(slow.count) of 20 learned A -> B frames passed AF_PACKET on \(a.tap): not offloaded" }
            return nil
        }
    }
}

/// A sender and a receiver thread: the sender calls `sender(seq)` every 2 ms with seq 1, 2, ...;
/// the receiver records what `receiver()` returns (nil: nothing within its timeout).
final class PacedFlow: Sendable {
    let stopping = Atomic<Bool>(false)
    let senderStopping = Atomic<Bool>(false)
    let finished = Atomic<Int>(0)
    /// The last seq sent.
    let sent = Atomic<UInt32>(0)
    let received = Locked<[UInt32]>([])
    let errors = Locked<[String]>([])

    func start(sender: @escaping @Sendable (UInt32) throws -> Void, receiver: @escaping @Sendable () throws -> UInt32?, firstSeq: UInt32) {
        let send = Thread { [self] in
            defer { finished.add(1, ordering: .releasing) }
            var seq = firstSeq
            let end = ContinuousClock.now + .seconds(90)
            while !stopping.load(ordering: .acquiring) && !senderStopping.load(ordering: .acquiring) && ContinuousClock.now < end {
                do { try sender(seq) } catch {
                    errors.withLock { $0.append("send #\(seq): \(error)") }
                    return
                }
                sent.store(seq, ordering: .releasing)
                seq += 1
                // Pacing of the flow, not synchronisation.
                var pause = timespec(tv_sec: 0, tv_nsec: 2_000_000)
                _ = nanosleep(&pause, nil)
            }
        }
        let receive = Thread { [self] in
            defer { finished.add(1, ordering: .releasing) }
            while !stopping.load(ordering: .acquiring) {
                do {
                    if let seq = try receiver() { received.withLock { $0.append(seq) } }
                } catch {
                    errors.withLock { $0.append("receive: \(error)") }
                    return
                }
            }
        }
        send.start()
        receive.start()
    }

    /// Stops both threads and waits for them (blocking; idempotent).
    func halt() throws {
        stopping.store(true, ordering: .releasing)
        try TestSupport.waitUntil("traffic threads end", timeout: .seconds(10)) { finished.load(ordering: .acquiring) == 2 }
    }
}

/// A raw AF_PACKET socket on one interface of the host: sends frames out of it and receives the
/// frames arriving on it (not its own or other sends). Blocking calls: use from a thread of its own.
final class RawLinkSocket: Sendable {
    private let fd: Locked<Int32>
    private let index: Int32

    init(interface: String) throws {
        index = Int32(bitPattern: if_nametoindex(interface))
        guard index > 0 else { throw TestHelperError("no interface \(interface)") }
        let protocolAll = UInt16(0x0003).bigEndian  // ETH_P_ALL
        let s = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(protocolAll))
        guard s >= 0 else { throw TestHelperError("socket(AF_PACKET): errno \(errno)") }
        var addr = LinkAddress()
        addr.family = UInt16(AF_PACKET)
        addr.proto = protocolAll
        addr.ifindex = index
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<LinkAddress>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(s)
            throw TestHelperError("bind AF_PACKET to \(interface): errno \(code)")
        }
        fd = Locked(s)
    }

    func send(_ frame: [UInt8]) throws {
        let r = fd.withLock { s in frame.withUnsafeBytes { Glibc.send(s, $0.baseAddress, $0.count, 0) } }
        guard r == frame.count else { throw TestHelperError("send on ifindex \(index): errno \(errno)") }
    }

    /// The next frame that arrived on the interface (not one sent out of it) within `timeout`; nil if none.
    func receive(timeout: Duration) throws -> [UInt8]? {
        let end = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            let left = ContinuousClock.now.duration(to: end)
            guard left > .zero else { return nil }
            let s = fd.withLock { $0 }
            var p = pollfd(fd: s, events: Int16(POLLIN), revents: 0)
            let ms = Int32(max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            guard poll(&p, 1, ms) > 0 else { continue }
            var from = LinkAddress()
            var length = socklen_t(MemoryLayout<LinkAddress>.size)
            let n = buffer.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(s, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT), $0, &length) }
                }
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw TestHelperError("recvfrom on ifindex \(index): errno \(errno)")
            }
            if from.pkttype == 4 { continue }  // PACKET_OUTGOING: our own send
            return Array(buffer.prefix(n))
        }
    }

    func close() {
        fd.withLock { s in
            if s >= 0 { Glibc.close(s) }
            s = -1
        }
    }
}

/// `struct sockaddr_ll` (linux/if_packet.h), which Glibc does not export: same fields, same order.
struct LinkAddress {
    var family: UInt16 = 0
    var proto: UInt16 = 0
    var ifindex: Int32 = 0
    var hatype: UInt16 = 0
    var pkttype: UInt8 = 0
    var halen: UInt8 = 0
    var addr: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
}
