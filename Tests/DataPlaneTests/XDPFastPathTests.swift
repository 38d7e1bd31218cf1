import DataPlane
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing

/// The XDP fast path on real TAPs: which frames take it, which stay on the slow path, and that
/// both deliver the same bytes with valid checksums.
@Suite("XDP fast path on real TAPs", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct XDPFastPathTests {
    let names = UniqueNames.run

    /// A runtime with offload on; skips (returns false) when this machine cannot load the program.
    func withFastPath(_ body: (SwitchRuntime, EventLog, Cleanup) async throws -> Void) async throws {
        try await withRuntime { rt, log, cleanup in
            let line = await rt.setOffload(enabled: true)
            try #require(line.hasPrefix("offload xdp:"), "fast path not loaded: \(line) (scripts/build-bpf)")
            try await body(rt, log, cleanup)
        }
    }

    @Test("a learned unicast flow takes the fast path: AF_PACKET no longer sees it, counters still rise; a disconnect stops it at once")
    func learnedFlow() async throws {
        try await withFastPath { rt, log, cleanup in
            let taps = [names.name("xa"), names.name("xb"), names.name("xc")]
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: Array(taps[0...1]), mac: 0x50, offloads: [false, false])
            defer { vms.forEach { $0.close() } }
            try await rt.startTestVM(taps[2], mac: mac(0x52), cleanup: cleanup)
            let c = try FakeVM(tap: taps[2], vnetHeader: true)
            defer { c.close() }
            try log.waitFor(.nicConnect, port: taps[2])
            #expect(XDPLink.mode(ifindex: try #require(try RouteNetlink().link(named: taps[0])).index) == "xdp")
            let ports = await rt.snapshot().ports
            #expect(ports.first { $0.port.name == taps[0] }?.offload?.hasPrefix("fast path (xdp);") == true)

            func frame(_ n: UInt8) -> [UInt8] {
                TestFrames.ethernet(dst: mac(0x51).bytes, src: mac(0x50).bytes, etherType: 0x88B5, payload: Array(repeating: n, count: 46))
            }
            // The first frame goes through the switch, which learns A and installs A → B.
            try vms[0].send(frame(0))
            #expect(try vms[1].receive(timeout: .seconds(2)) == frame(0))
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 1)
            let slowBefore = try #require(await rt.counters(taps[0]))
            for n in 1...20 { try vms[0].send(frame(UInt8(n))) }
            for n in 1...20 { #expect(try vms[1].receive(timeout: .seconds(2)) == frame(UInt8(n))) }
            let fast = try #require(await rt.fastPathCounters(taps[0]))
            #expect(fast.framesIn == 20)
            let after = try #require(await rt.counters(taps[0]))
            #expect(after.framesIn == slowBefore.framesIn + 20)  // counters whole: fast + slow
            #expect(after.framesIn - fast.framesIn == slowBefore.framesIn - 0)  // none reached AF_PACKET
            #expect(try #require(await rt.fastPathCounters(taps[1])).framesOut == 20)

            // NIC_DISCONNECT of B: the next frame to B is not delivered to B; it floods (B's MAC is
            // forgotten) and reaches C, the positive control.
            let b = try #require(await rt.withSwitch { $0.port(named: taps[1])?.id })
            #expect(await rt.withSwitch { sw in (try? sw.disconnectNIC(on: b)) != nil })
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 0)
            try vms[0].send(frame(99))
            #expect(try c.receive(timeout: .seconds(2)) == frame(99))
            #expect(try vms[1].receive(timeout: .milliseconds(200)) == nil)
        }
    }

    @Test("partial checksums (NEEDS_CSUM UDP and TCP) and TSO superframes take the skb fast path: AF_PACKET sees none, they arrive valid")
    func checksumsAndSuperframes() async throws {
        try await withFastPath { rt, log, cleanup in
            let taps = [names.name("ya"), names.name("yb"), names.name("yc")]
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: taps, mac: 0x58, offloads: [true, true, false])
            defer { vms.forEach { $0.close() } }
            let (a, b, c) = (mac(0x58), mac(0x59), mac(0x5A))
            let none = [UInt8](repeating: 0, count: 10)
            // C (no offloads) announces itself too, so A → C is learned.
            try vms[2].send(vnetHeader: none, frame: TestFrames.broadcast(src: c.bytes, payload: Array(repeating: 0, count: 46)))
            _ = try #require(try vms[0].receiveWithHeader(timeout: .seconds(2)), "C's broadcast did not reach A")
            _ = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)), "C's broadcast did not reach B")
            _ = try #require(try vms[2].receiveWithHeader(timeout: .seconds(2)), "B's broadcast did not reach C")
            // Install A → B and A → C with complete-checksum UDP frames, which then take native XDP.
            for (vm, dst) in [(vms[1], b), (vms[2], c)] {
                let complete = ipFrame(dst: dst, src: a, proto: 17, payload: 100, partial: false)
                try vms[0].send(vnetHeader: none, frame: complete)
                let first = try #require(try vm.receiveWithHeader(timeout: .seconds(2)))
                #expect(first.frame == complete && checksumValid(first.frame, header: first.header))
            }
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 2)
            let slowIn = { () async throws -> UInt64 in
                let all = try #require(await rt.counters(taps[0])), fast = try #require(await rt.fastPathCounters(taps[0]))
                return all.framesIn - fast.framesIn
            }
            let slowBefore = try await slowIn()
            let fastBefore = try #require(await rt.fastPathCounters(taps[0])).framesIn

            // Partial checksums, as a virtio guest with checksum offload writes them (NEEDS_CSUM).
            // B (offloads on) gets them still partial with NEEDS_CSUM; C (no offloads) complete.
            for (proto, offset) in [(UInt8(17), UInt8(6)), (6, 16)] {
                for (vm, dst, name) in [(vms[1], b, "B"), (vms[2], c, "C")] {
                    let partial = ipFrame(dst: dst, src: a, proto: proto, payload: 300, partial: true)
                    try vms[0].send(vnetHeader: [1, 0, 0, 0, 0, 0, 34, 0, offset, 0], frame: partial)
                    let got = try #require(try vm.receiveWithHeader(timeout: .seconds(2)), "proto \(proto) to \(name) lost")
                    #expect(got.frame.count == partial.count)
                    #expect(checksumValid(got.frame, header: got.header), "proto \(proto) to \(name): invalid checksum at the receiver")
                    #expect((got.header[0] & 1 != 0) == (name == "B"), "proto \(proto) to \(name): NEEDS_CSUM \(got.header)")
                }
            }

            // A TSO superframe (GSO TCPv4, partial checksum): B takes it whole, still GSO; C, without
            // offloads, gets it segmented by the kernel into valid full-size frames.
            let superframe = ipFrame(dst: b, src: a, proto: 6, payload: 20_000, partial: true)
            let tso: [UInt8] = [1, 1, 54, 0, 0xA8, 0x05, 34, 0, 16, 0]
            try vms[0].send(vnetHeader: tso, frame: superframe)
            let whole = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)), "superframe to B lost")
            #expect(whole.frame == superframe)
            #expect(whole.header[1] == 1 && checksumValid(whole.frame, header: whole.header))
            try vms[0].send(vnetHeader: tso, frame: ipFrame(dst: c, src: a, proto: 6, payload: 20_000, partial: true))
            var payload = 0, segments = 0
            while payload < 20_000, let seg = try vms[2].receiveWithHeader(timeout: .seconds(2)) {
                #expect(seg.frame.count <= 1514 && seg.header[1] == 0)
                #expect(checksumValid(seg.frame, header: seg.header), "segment \(segments) invalid")
                payload += seg.frame.count - 54
                segments += 1
            }
            #expect(payload == 20_000 && segments == 14)

            // All six crossed on the fast path (counted there), none reached the switch's socket.
            #expect(try #require(await rt.fastPathCounters(taps[0])).framesIn == fastBefore + 6)
            #expect(try await slowIn() == slowBefore)
        }
    }

    @Test("the skb path pushes and pops 802.1Q tags as the slow path does: partial checksums between an access port and a trunk arrive valid, tag in place")
    func skbPathVLANs() async throws {
        try await withFastPath { rt, log, cleanup in
            let taps = [names.name("wa"), names.name("wt")]
            let (a, t) = (mac(0x64), mac(0x65))
            try await rt.startTestVM(taps[0], mac: a, vlan: 10, cleanup: cleanup)
            try await rt.startTestVM(taps[1], mac: t, cleanup: cleanup)
            #expect(await rt.withSwitch { sw in
                guard let id = sw.port(named: taps[1])?.id else { return false }
                return (try? sw.addProperty(.vlan(.trunk(allowed: [10], native: nil)), to: id)) != nil
            })
            let vms = try taps.map { try FakeVM(tap: $0, vnetHeader: true) }
            defer { vms.forEach { $0.close() } }
            for vm in vms { try TapDevice.setOffload(fd: vm.fileDescriptor, csum: true, tso4: true, tso6: true) }
            for tap in taps { try log.waitFor(.nicConnect, port: tap) }
            let none = [UInt8](repeating: 0, count: 10)
            try vms[1].send(vnetHeader: none, frame: TestFrames.ethernet(dst: TestFrames.broadcastMAC, src: t.bytes, etherType: 0x88B5,
                                                                         vlan: 10, payload: Array(repeating: 0, count: 46)))
            _ = try #require(try vms[0].receiveWithHeader(timeout: .seconds(2)), "T's broadcast did not reach A")

            /// `frame` with an 802.1Q tag of VLAN `vid` after the addresses (and the header's csum_start moved).
            func tagged(_ frame: [UInt8], _ vid: UInt8) -> [UInt8] { Array(frame[0..<12]) + [0x81, 0, 0, vid] + Array(frame[12...]) }
            /// A received tagged frame as `checksumValid` reads it: tag removed, csum_start moved back.
            func untag(_ got: (header: [UInt8], frame: [UInt8])) -> (header: [UInt8], frame: [UInt8])? {
                guard got.frame.count > 18, got.frame[12] == 0x81, got.frame[13] == 0, got.frame[15] == 10 else { return nil }
                var header = got.header
                if header[0] & 1 != 0 { header[6] -= 4 }
                return (header, Array(got.frame[0..<12]) + Array(got.frame[16...]))
            }
            // The first frame each way goes through the switch and installs the entry (push, pop).
            let upFirst = ipFrame(dst: t, src: a, proto: 17, payload: 100, partial: false)
            try vms[0].send(vnetHeader: none, frame: upFirst)
            #expect(try vms[1].receiveWithHeader(timeout: .seconds(2)).flatMap(untag)?.frame == upFirst)
            let downFirst = ipFrame(dst: a, src: t, proto: 17, payload: 100, partial: false)
            try vms[1].send(vnetHeader: none, frame: tagged(downFirst, 10))
            #expect(try vms[0].receiveWithHeader(timeout: .seconds(2))?.frame == downFirst)
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 2)
            let fastA = try #require(await rt.fastPathCounters(taps[0])), fastT = try #require(await rt.fastPathCounters(taps[1]))

            for (proto, offset) in [(UInt8(17), UInt8(6)), (6, 16)] {
                // A (access) → T (trunk): the tag is pushed.
                let up = ipFrame(dst: t, src: a, proto: proto, payload: 300, partial: true)
                try vms[0].send(vnetHeader: [1, 0, 0, 0, 0, 0, 34, 0, offset, 0], frame: up)
                let gotUp = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)), "proto \(proto) A → T lost")
                let plainUp = try #require(untag(gotUp), "proto \(proto) A → T: no tag 10 \(gotUp.frame.prefix(18))")
                #expect(plainUp.frame == up && checksumValid(plainUp.frame, header: plainUp.header), "proto \(proto) A → T")
                // T → A: the tag is popped.
                let down = ipFrame(dst: a, src: t, proto: proto, payload: 300, partial: true)
                try vms[1].send(vnetHeader: [1, 0, 0, 0, 0, 0, 38, 0, offset, 0], frame: tagged(down, 10))
                let gotDown = try #require(try vms[0].receiveWithHeader(timeout: .seconds(2)), "proto \(proto) T → A lost")
                #expect(gotDown.frame == down && checksumValid(gotDown.frame, header: gotDown.header), "proto \(proto) T → A")
            }
            #expect(try #require(await rt.fastPathCounters(taps[0])).framesIn == fastA.framesIn + 2)
            #expect(try #require(await rt.fastPathCounters(taps[1])).framesIn == fastT.framesIn + 2)
        }
    }

    @Test("offload off removes every attachment; the same flow then takes the slow path")
    func offloadOff() async throws {
        try await withFastPath { rt, log, cleanup in
            let taps = [names.name("za"), names.name("zb")]
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: taps, mac: 0x5C, offloads: [false, false])
            defer { vms.forEach { $0.close() } }
            let index = try #require(try RouteNetlink().link(named: taps[0])).index
            #expect(XDPLink.mode(ifindex: index) == "xdp")
            #expect(TCXLink.ingressPrograms(ifindex: index) == 1)
            _ = await rt.setOffload(enabled: false)
            #expect(XDPLink.mode(ifindex: index) == nil)
            // The kernel may finish detaching a closed tcx link a moment later (a fresh-clone CI run read
            // 1 right after the call): wait for it, bounded.
            #expect(throws: Never.self) { try waitUntil("tcx program detached", timeout: .seconds(5)) { TCXLink.ingressPrograms(ifindex: index) == 0 } }
            let f = TestFrames.ethernet(dst: mac(0x5D).bytes, src: mac(0x5C).bytes, etherType: 0x88B5, payload: Array(repeating: 5, count: 46))
            for _ in 0..<3 { try vms[0].send(f) }
            for _ in 0..<3 { #expect(try vms[1].receive(timeout: .seconds(2)) == f) }
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 0)
            let ports = await rt.snapshot().ports
            #expect(ports.first { $0.port.name == taps[0] }?.offload == "slow path: offload = \"off\"")
        }
    }
}

extension XDPFastPathTests {
    @Test("the receive filter hides a flow's frames only while the fast path's maps are held: a socket kept past the daemon hides nothing")
    func receiveFilterDisarms() throws {
        try Privilege.requireNetAdmin()
        let path = try #require(XDPFastPath.findObject(), "no BPF object (scripts/build-bpf)")
        let name = names.name("fa")
        let cleanup = Cleanup()
        defer { cleanup.run() }
        try TapDevice.createPersistent(name: InterfaceName(name), owner: nil, group: nil)
        cleanup.deleteLink(name)
        let rtnl = try RouteNetlink()
        try rtnl.disableHostStack(name)
        try rtnl.setLink(name, up: true)
        let index = try #require(try rtnl.link(named: name)).index
        let vm = try FakeVM(tap: name, vnetHeader: true)
        defer { vm.close() }
        let socket = try PacketSocket(interfaceIndex: index, interfaceName: name,
                                      options: .init(vnetHeader: false, auxData: false, qdiscBypass: false))
        defer { socket.close() }
        var fastPath: XDPFastPath? = try XDPFastPath(objectPath: path, maxPorts: 4, maxFlows: 16)
        try fastPath?.hideSkbPathFrames(from: socket)
        try fastPath?.setPort(1, ifindex: index)
        let (a, b, c) = (mac(0x60), mac(0x61), mac(0x62))
        #expect(fastPath?.insert(.init(ifindex: UInt32(index), tag: 0, dst: b.rawValue, src: a.rawValue), egress: 1, ingress: 0) == true)
        func frame(_ dst: MACAddress, _ n: UInt8) -> [UInt8] {
            TestFrames.ethernet(dst: dst.bytes, src: a.bytes, etherType: 0x88B5, payload: Array(repeating: n, count: 46))
        }
        /// The payload bytes of the frames the socket got within `timeout` (each frame is 46 times its byte).
        func received(_ timeout: Int32) -> [UInt8] {
            var got: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 2048)
            while true {
                var p = pollfd(fd: socket.fileDescriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, timeout) == 1 else { return got }
                let n = recv(socket.fileDescriptor, &buffer, buffer.count, 0)
                if n > 14 { got.append(buffer[14]) }
            }
        }
        // No tcx program is attached, so a hidden frame goes nowhere: A → B (with an entry) is hidden,
        // A → C (none) is the positive control.
        try vm.send(frame(b, 1))
        try vm.send(frame(c, 2))
        #expect(received(500) == [2])
        // The daemon's fds close (exit, crash, exec): the kernel empties the program array (in a work
        // item, so moments later) and the filter hides nothing.
        fastPath?.close()
        fastPath = nil
        let deadline = ContinuousClock.now + .seconds(5)
        var got: [UInt8] = []
        while !got.contains(3), ContinuousClock.now < deadline {
            try vm.send(frame(b, 3))
            got += received(20)
        }
        #expect(got.contains(3), "the filter still hides A → B after the fast path was closed")
        try vm.send(frame(b, 5))
        #expect(received(2000).last == 5)
    }
}

/// An Ethernet/IPv4 UDP (17) or TCP (6) frame with `payload` bytes; its L4 checksum complete, or
/// `partial` (the pseudo-header sum, as a guest with checksum offload leaves it).
func ipFrame(dst: MACAddress, src: MACAddress, proto: UInt8, payload: Int, partial: Bool) -> [UInt8] {
    let l4Header = proto == 17 ? 8 : 20
    let l4Length = l4Header + payload
    let total = 20 + l4Length
    var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2]
    let ipSum = ~fold(onesSum(ip, 0))
    ip[10] = UInt8(ipSum >> 8); ip[11] = UInt8(ipSum & 0xFF)
    var l4: [UInt8]
    if proto == 17 {
        l4 = [0x30, 0x39, 0x14, 0x51, UInt8(l4Length >> 8), UInt8(l4Length & 0xFF), 0, 0]
    } else {
        l4 = [0x30, 0x39, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
    }
    l4 += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    let at = proto == 17 ? 6 : 16
    let pseudo = pseudoSum(ip, l4Length: l4Length)
    let value: UInt16 = partial ? fold(pseudo) : ~fold(onesSum(l4, pseudo))
    l4[at] = UInt8(value >> 8); l4[at + 1] = UInt8(value & 0xFF)
    return TestFrames.ethernet(dst: dst.bytes, src: src.bytes, etherType: 0x0800, payload: ip + l4)
}

func pseudoSum(_ ip: [UInt8], l4Length: Int) -> UInt32 {
    onesSum(Array(ip[12..<20]) + [0, ip[9], UInt8(l4Length >> 8), UInt8(l4Length & 0xFF)], 0)
}

func onesSum(_ bytes: [UInt8], _ start: UInt32) -> UInt32 {
    var sum = start
    var i = 0
    while i + 1 < bytes.count {
        sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
        i += 2
    }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    return UInt32(fold(sum))
}

func fold(_ s: UInt32) -> UInt16 {
    var sum = s
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return UInt16(sum)
}

/// Whether an IPv4 TCP/UDP frame's L4 checksum is valid as the receiver reads it: when the
/// virtio-net header says NEEDS_CSUM, completed the way the receiver's stack does first.
func checksumValid(_ frame: [UInt8], header: [UInt8]) -> Bool {
    guard frame.count > 34, frame[12] == 0x08, frame[13] == 0 else { return false }
    let ip = Array(frame[14..<34])
    let l4Length = Int(ip[2]) << 8 | Int(ip[3]) - 20
    var l4 = Array(frame[34..<(34 + l4Length)])
    if header.count >= 10, header[0] & 1 != 0 {
        let start = Int(header[6]) | Int(header[7]) << 8, offset = Int(header[8]) | Int(header[9]) << 8
        let at = start - 14 - 20 + offset
        guard start == 34, at + 1 < l4.count else { return false }
        let sum = ~fold(onesSum(l4, 0))
        l4[at] = UInt8(sum >> 8); l4[at + 1] = UInt8(sum & 0xFF)
    }
    return fold(onesSum(l4, pseudoSum(ip, l4Length: l4Length))) == 0xFFFF
}
