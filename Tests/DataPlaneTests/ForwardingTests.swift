import DataPlane
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing

@Suite("Forwarding between fake VMs on real TAPs", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct ForwardingTests {
    let names = UniqueNames.run

    @Test("three VMs: flooding, learning, unicast after learning, counters")
    func threeVMs() async throws {
        try await withRuntime { rt, log, cleanup in
            let taps = [names.name("fa"), names.name("fb"), names.name("fc")]
            let macs = [mac(0xA), mac(0xB), mac(0xC)]
            for (t, m) in zip(taps, macs) { try await rt.startTestVM(t, mac: m, cleanup: cleanup) }
            let vms = try taps.map { try FakeVM(tap: $0) }
            defer { vms.forEach { $0.close() } }
            for t in taps { try log.waitFor(.nicConnect, port: t) }

            // Broadcast from A reaches B and C, not A.
            let bcast = TestFrames.broadcast(src: macs[0].bytes, payload: Array(repeating: 1, count: 46))
            try vms[0].send(bcast)
            #expect(try vms[1].receive(timeout: .seconds(2)) == bcast)
            #expect(try vms[2].receive(timeout: .seconds(2)) == bcast)

            // B → A is unicast now that A is learned: only A gets it. C's next frame is B's marker
            // broadcast, which proves the unicast was never delivered to C (delivery is in order).
            let unicast = TestFrames.ethernet(dst: macs[0].bytes, src: macs[1].bytes, etherType: 0x88B5, payload: Array(repeating: 2, count: 46))
            try vms[1].send(unicast)
            #expect(try vms[0].receive(timeout: .seconds(2)) == unicast)
            let marker = TestFrames.broadcast(src: macs[1].bytes, payload: Array(repeating: 3, count: 46))
            try vms[1].send(marker)
            #expect(try vms[2].receive(timeout: .seconds(2)) == marker)
            #expect(try vms[0].receive(timeout: .seconds(2)) == marker)

            // Unknown unicast floods to everyone but the source.
            let unknown = TestFrames.ethernet(dst: mac(0xEE).bytes, src: macs[2].bytes, etherType: 0x88B5, payload: Array(repeating: 4, count: 46))
            try vms[2].send(unknown)
            #expect(try vms[0].receive(timeout: .seconds(2)) == unknown)
            #expect(try vms[1].receive(timeout: .seconds(2)) == unknown)

            let a = try #require(await rt.counters(taps[0]))
            let b = try #require(await rt.counters(taps[1]))
            #expect(a.framesIn == 1 && a.framesOut == 3)  // sent bcast; got unicast, marker, unknown
            #expect(b.framesIn == 2 && b.framesOut == 2)
            let entries = await rt.macEntries()
            #expect(Set(entries.map(\.mac)) == Set(macs))
        }
    }

    @Test("802.1Q-tagged frames cross trunk ports with their tag intact")
    func vlanTagIntact() async throws {
        try await withRuntime { rt, log, cleanup in
            let taps = [names.name("va"), names.name("vb")]
            for (i, t) in taps.enumerated() { try await rt.startTestVM(t, mac: mac(UInt8(0x20 + i)), cleanup: cleanup) }
            // A port without a VLAN setting takes untagged frames only: make both trunks.
            let trunked = await rt.withSwitch { sw in
                taps.allSatisfy { t in
                    guard let id = sw.port(named: t)?.id else { return false }
                    return (try? sw.addProperty(.vlan(.trunk(allowed: [7, 100], native: nil)), to: id)) != nil
                }
            }
            #expect(trunked)
            let vms = try taps.map { try FakeVM(tap: $0) }
            defer { vms.forEach { $0.close() } }
            for t in taps { try log.waitFor(.nicConnect, port: t) }
            let tagged = TestFrames.ethernet(dst: TestFrames.broadcastMAC, src: mac(0x20).bytes, etherType: 0x0800 + 0x88,
                                             vlan: 0x2064, payload: Array(repeating: 7, count: 60))
            try vms[0].send(tagged)
            #expect(try vms[1].receive(timeout: .seconds(2)) == tagged)
            // And back the other way, to the now-learned MAC, on another VLAN.
            let back = TestFrames.ethernet(dst: mac(0x20).bytes, src: mac(0x21).bytes, etherType: 0x88B5, vlan: 7,
                                           payload: Array(repeating: 8, count: 60))
            try vms[1].send(back)
            #expect(try vms[0].receive(timeout: .seconds(2)) == back)
        }
    }

    @Test("a TSO superframe with a virtio-net header crosses intact")
    func tsoSuperframe() async throws {
        try await withRuntime { rt, log, cleanup in
            // As QEMU does once the guest negotiated offloads: the TAP may hand us superframes.
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: [names.name("ga"), names.name("gb")], mac: 0x30,
                                              offloads: [true, true])
            defer { vms.forEach { $0.close() } }

            let payload = 20_000
            let frame = tcpFrame(dst: mac(0x31), src: mac(0x30), payload: payload)
            // NEEDS_CSUM, GSO TCPv4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16 (little-endian).
            let header: [UInt8] = [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0]
            try vms[0].send(vnetHeader: header, frame: frame)
            let got = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)))
            #expect(got.frame.count == frame.count)
            #expect(got.frame == frame)
            #expect(got.header[1] == 1)  // still GSO TCPv4
            #expect(got.header[4] == 0xA8 && got.header[5] == 0x05)  // gso_size kept
            #expect(got.header[6] == 34 && got.header[8] == 16)  // checksum offsets kept
        }
    }
}

extension ForwardingTests {
    @Test("a TSO superframe to a VM without offloads arrives segmented, not dropped")
    func tsoToVMWithoutOffloads() async throws {
        try await withRuntime { rt, log, cleanup in
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: [names.name("ha"), names.name("hb")], mac: 0x38,
                                              offloads: [true, false])  // sender only
            defer { vms.forEach { $0.close() } }
            let frame = tcpFrame(dst: mac(0x39), src: mac(0x38), payload: 20_000)
            try vms[0].send(vnetHeader: [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0], frame: frame)
            var received = 0
            while let got = try vms[1].receiveWithHeader(timeout: .seconds(2)) {
                #expect(got.frame.count <= 1514)
                received += got.frame.count - 66
                if received >= 20_000 { break }
            }
            #expect(received == 20_000)
        }
    }
}

/// An Ethernet/IPv4/TCP frame with `payload` bytes of data (checksum left partial, as a guest with
/// TSO sends it).
func tcpFrame(dst: MACAddress, src: MACAddress, payload: Int) -> [UInt8] {
    let total = 20 + 32 + payload
    var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2]
    var tcp: [UInt8] = [0x30, 0x39, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
    tcp += [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 1]
    ip += tcp
    var data = [UInt8](repeating: 0, count: payload)
    for i in 0..<payload { data[i] = UInt8(truncatingIfNeeded: i &* 31) }
    return dst.bytes + src.bytes + [0x08, 0x00] + ip + data
}

extension ForwardingTests {
    @Test("superframes (read from the socket queue) and small frames (read from the ring) keep their order")
    func ringAndQueueKeepOrder() async throws {
        try await withRuntime { rt, log, cleanup in
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: [names.name("oa"), names.name("ob")], mac: 0x40,
                                              offloads: [true, true])
            defer { vms.forEach { $0.close() } }

            // Back to back, so they sit in the ring and the socket queue together before the loop reads them.
            var sent: [[UInt8]] = []
            for k in 0..<12 {
                var frame = tcpFrame(dst: mac(0x41), src: mac(0x40), payload: k % 2 == 0 ? 100 : 9_000 + k)
                frame[frame.count - 1] = UInt8(k)  // marker
                let header: [UInt8] = k % 2 == 0 ? Array(repeating: 0, count: 10) : [1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0]
                try vms[0].send(vnetHeader: header, frame: frame)
                sent.append(frame)
            }
            for (k, frame) in sent.enumerated() {
                let got = try #require(try vms[1].receiveWithHeader(timeout: .seconds(2)), "frame \(k) missing")
                #expect(got.frame.count == frame.count, "frame \(k): length")
                #expect(got.frame.last == UInt8(k), "frame \(k) out of order")
                let same = got.frame == frame  // a Bool, so a failure does not print 9 KB arrays
                #expect(same, "frame \(k): bytes differ")
            }
        }
    }
}

extension ForwardingTests {
    @Test("frames the kernel drops because a port's receive ring is full are counted on that port")
    func ringOverflowIsCounted() async throws {
        try await withRuntime { rt, log, cleanup in
            let taps = [names.name("ra"), names.name("rb")]
            for (i, t) in taps.enumerated() { try await rt.startTestVM(t, mac: mac(UInt8(0x48 + i)), cleanup: cleanup) }
            let vms = try taps.map { try FakeVM(tap: $0, vnetHeader: false) }
            defer { vms.forEach { $0.close() } }
            for t in taps { try log.waitFor(.nicConnect, port: t) }
            // Hold the packet loop's queue while the VM writes more frames than the ring has slots.
            let fd = vms[0].fileDescriptor
            let frame = TestFrames.broadcast(src: mac(0x48).bytes, payload: Array(repeating: 7, count: 46))
            let written = await rt.withSwitch { _ in
                var n = 0
                for _ in 0..<4_000 where frame.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == frame.count { n += 1 }
                return n
            }
            #expect(written == 4_000)
            // 1024 slots: the rest was dropped by the kernel and must show up, not vanish.
            let deadline = Date().addingTimeInterval(5)
            var seen: UInt64 = 0
            var ringFull: UInt64 = 0
            repeat {
                let c = try #require(await rt.counters(taps[0]))
                ringFull = c.drops[.init(direction: .ingress, reason: "receive ring full", reporter: "device")] ?? 0
                seen = c.framesIn + ringFull
            } while seen < 4_000 && Date() < deadline
            #expect(ringFull >= 2_000)
            #expect(seen == 4_000)
        }
    }
}

/// Two fake VMs on fresh TAPs, attached with virtio-net headers as QEMU does (`offloads[i]`: the
/// guest negotiated TSO, so its TAP may carry superframes), connected, and B learned (it sent a
/// broadcast that A received), so frames from A to B are unicast. MACs are `mac(base)`, `mac(base + 1)`.
func twoLearnedVMs(_ rt: SwitchRuntime, _ log: EventLog, _ cleanup: Cleanup, names taps: [String], mac base: UInt8,
                   offloads: [Bool]) async throws -> [FakeVM] {
    for (i, t) in taps.enumerated() { try await rt.startTestVM(t, mac: mac(base + UInt8(i)), cleanup: cleanup) }
    let vms = try taps.map { try FakeVM(tap: $0, vnetHeader: true) }
    do {
        for (vm, on) in zip(vms, offloads) where on {
            try TapDevice.setOffload(fd: vm.fileDescriptor, csum: true, tso4: true, tso6: true)
        }
        for t in taps { try log.waitFor(.nicConnect, port: t) }
        try vms[1].send(vnetHeader: Array(repeating: 0, count: 10),
                        frame: TestFrames.broadcast(src: mac(base + 1).bytes, payload: Array(repeating: 0, count: 46)))
        _ = try #require(try vms[0].receiveWithHeader(timeout: .seconds(2)), "B's broadcast did not reach A")
    } catch {
        vms.forEach { $0.close() }
        throw error
    }
    return vms
}
