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

    @Test("partial checksums (NEEDS_CSUM UDP and TCP) and TSO superframes stay on the slow path and arrive with valid checksums")
    func checksumsAndSuperframes() async throws {
        try await withFastPath { rt, log, cleanup in
            let taps = [names.name("ya"), names.name("yb")]
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: taps, mac: 0x58, offloads: [true, true])
            defer { vms.forEach { $0.close() } }
            let (a, b) = (mac(0x58), mac(0x59))
            let none = [UInt8](repeating: 0, count: 10)
            // Install A → B with a complete-checksum UDP frame, which itself may take the fast path.
            let complete = ipFrame(dst: b, src: a, proto: 17, payload: 100, partial: false)
            try vms[0].send(vnetHeader: none, frame: complete)
            let first = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)))
            #expect(first.frame == complete && checksumValid(first.frame, header: first.header))
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 1)
            try vms[0].send(vnetHeader: none, frame: complete)
            let second = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)))
            #expect(checksumValid(second.frame, header: second.header))
            #expect(try #require(await rt.fastPathCounters(taps[0])).framesIn == 1)  // the fast path took it

            // Partial checksums, as a virtio guest with checksum offload writes them.
            for (proto, offset) in [(UInt8(17), UInt8(6)), (6, 16)] {
                let partial = ipFrame(dst: b, src: a, proto: proto, payload: 300, partial: true)
                try vms[0].send(vnetHeader: [1, 0, 0, 0, 0, 0, 34, 0, offset, 0], frame: partial)
                let got = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)), "proto \(proto) lost")
                #expect(got.frame.count == partial.count)
                #expect(checksumValid(got.frame, header: got.header), "proto \(proto): invalid checksum at the receiver")
            }
            #expect(try #require(await rt.fastPathCounters(taps[0])).framesIn == 1)  // neither took the fast path

            // A TSO superframe (GSO TCPv4): never redirected, crosses whole.
            let frame = tcpFrame(dst: b, src: a, payload: 20_000)
            try vms[0].send(vnetHeader: [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0], frame: frame)
            let got = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)))
            #expect(got.frame == frame)
            #expect(got.header[1] == 1)
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
            _ = await rt.setOffload(enabled: false)
            #expect(XDPLink.mode(ifindex: index) == nil)
            let f = TestFrames.ethernet(dst: mac(0x5D).bytes, src: mac(0x5C).bytes, etherType: 0x88B5, payload: Array(repeating: 5, count: 46))
            for _ in 0..<3 { try vms[0].send(f) }
            for _ in 0..<3 { #expect(try vms[1].receive(timeout: .seconds(2)) == f) }
            #expect(await rt.withSwitch { $0.offloadedFlowCount } == 0)
            let ports = await rt.snapshot().ports
            #expect(ports.first { $0.port.name == taps[0] }?.offload == "slow path: offload = \"off\"")
        }
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
