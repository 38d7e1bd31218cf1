import DataPlane
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 12, item 5: the frame-level fault suite on real TAPs. A guest (a ``FakeVM`` attached with
/// and without `IFF_VNET_HDR`) writes every kind of odd frame the kernel accepts from it: each
/// virtio-net header combination (GSO TCPv4/TCPv6/UDP/UDP_L4, ECN, checksum offload, bad
/// `hdr_len`/`csum_start`/`gso_size`, truncated), runts, jumbo frames beyond the MTU, QinQ. After each
/// one the port still forwards normal frames: a positive control reaches a receiver with offloads
/// (virtio-net header) and one without. (A frame longer than a receiver's MTU is dropped for that
/// receiver alone, as "frame larger than the destination's MTU": it used to take the frames after
/// it in the same batch with it, counted as "transmit error".)
@Suite("Frame fault suite on real TAPs (issue 12 item 5)", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct FrameFaultTests {
    /// A prefix of this suite's own (other suites of the run use the shared one).
    let names = UniqueNames()

    @Test("issue 12 item 5: after every odd frame a guest can write, its port still forwards normal frames", arguments: [true, false])
    func portForwardsAfterEveryFault(vnetHeader: Bool) async throws {
        try await withRuntime { rt, log, cleanup in
            let taps = [names.name(vnetHeader ? "qa" : "qn"), names.name(vnetHeader ? "qb" : "qm"), names.name(vnetHeader ? "qc" : "ql")]
            let (macA, macB, macC) = (mac(0x70), mac(0x71), mac(0x72))
            for (t, m) in zip(taps, [macA, macB, macC]) { try await rt.startTestVM(t, mac: m, cleanup: cleanup) }
            let a = try FakeVM(tap: taps[0], vnetHeader: vnetHeader)
            let b = try FakeVM(tap: taps[1], vnetHeader: true)
            let c = try FakeVM(tap: taps[2], vnetHeader: false)
            defer { [a, b, c].forEach { $0.close() } }
            // B reads like a virtio-net guest with offloads (GSO frames reach it whole); C like one without.
            try TapDevice.setOffload(fd: b.fileDescriptor, csum: true, tso4: true, tso6: true)
            for t in taps { try log.waitFor(.nicConnect, port: t) }
            // B and C are learned, so A's unicast goes only to its destination.
            try b.send(vnetHeader: Array(repeating: 0, count: 10), frame: TestFrames.broadcast(src: macB.bytes, payload: Array(repeating: 0, count: 46)))
            try c.send(TestFrames.broadcast(src: macC.bytes, payload: Array(repeating: 0, count: 46)))
            try await rt.waitForFramesIn(taps[2], atLeast: 1)
            try await rt.waitForFramesIn(taps[1], atLeast: 1)

            var kernelRefused: [String] = []
            var control: UInt16 = 0
            for fault in FrameFault.allCases where vnetHeader || fault.header == nil {
                let frame = fault.frame(dst: macB.bytes, src: macA.bytes)
                do {
                    if vnetHeader {
                        try a.send(vnetHeader: fault.header ?? Array(repeating: 0, count: 10), frame: frame)
                    } else {
                        try a.send(frame)
                    }
                } catch let error as SystemError where error.errno == EINVAL || error.errno == EIO {
                    kernelRefused.append(fault.rawValue)  // the kernel refuses it from a guest: nothing reaches the switch
                }
                // Positive control: normal frames from A reach B (offloads) and C (none), whole.
                for (vm, dst) in [(b, macB), (c, macC)] {
                    control &+= 1
                    let normal = TestFrames.ethernet(dst: dst.bytes, src: macA.bytes, etherType: 0x88B5,
                                                     payload: Array("fault".utf8) + [UInt8(control >> 8), UInt8(control & 0xff)] + Array(repeating: 7, count: 40))
                    if vnetHeader { try a.send(vnetHeader: Array(repeating: 0, count: 10), frame: normal) } else { try a.send(normal) }
                    var arrived = false
                    while let got = try vm.receive(timeout: .seconds(2)) {
                        if got == normal { arrived = true; break }
                    }
                    if !arrived {
                        var counters: [String] = []
                        for t in taps { counters.append("\(t): \(String(describing: await rt.counters(t)))") }
                        Issue.record("after '\(fault.rawValue)' (vnet header \(vnetHeader)), a normal frame from A did not reach \(vm.tap.value)\n\(counters.joined(separator: "\n"))")
                        return
                    }
                }
            }
            let counters = try #require(await rt.counters(taps[0]))
            #expect(counters.drops.keys.allSatisfy { $0.reason != "receive ring full" }, "\(counters.drops)")
            // A frame too long for a receiver is that receiver's drop, named; nothing is a bare transmit error.
            // (The odd frames go to B only.)
            let dropsB = try #require(await rt.counters(taps[1])).drops
            #expect(dropsB.keys.contains { $0.reason == "frame larger than the destination's MTU" && $0.direction == .egress }, "\(dropsB)")
            for t in taps[1...] {
                let drops = try #require(await rt.counters(t)).drops
                #expect(drops.keys.allSatisfy { $0.reason != "transmit error" }, "\(t): \(drops)")
            }
            // The kernel itself refuses only malformed headers and frames shorter than an Ethernet header.
            #expect(kernelRefused.allSatisfy { name in
                FrameFault(rawValue: name).map { $0.header != nil || $0.frame(dst: macB.bytes, src: macA.bytes).count < 14 } ?? false
            }, "refused by the kernel: \(kernelRefused)")
            print("FrameFault vnetHeader=\(vnetHeader): \(FrameFault.allCases.count) cases, refused by the kernel: \(kernelRefused)")
        }
    }
}

/// One odd frame a guest can write: a virtio-net header (nil: none, or all zero on a queue with
/// `IFF_VNET_HDR`) and the frame after it.
enum FrameFault: String, CaseIterable, Sendable {
    // GSO superframes (NEEDS_CSUM, a gso_size below the frame), also with ECN.
    case gsoTCPv4, gsoTCPv4ECN, gsoTCPv6, gsoTCPv6ECN, gsoUDP, gsoUDPL4v4, gsoUDPL4v6
    // Checksum offload without GSO, and "data valid".
    case csumTCPv4, csumUDPv6, dataValid
    // Malformed headers.
    case hdrLenBeyondFrame, hdrLenZero, hdrLenOne, csumStartBeyondFrame, csumOffsetBeyondFrame, csumStartInEthernetHeader
    case gsoSizeZero, gsoSizeOne, gsoTypeUnknown, gsoTypeReserved2, gsoTCPv4OnIPv6, gsoTCPv4OnARP, gsoTCPv4OnRunt, gsoWithoutNeedsCsum
    case unknownFlags
    // Truncated and runt frames.
    case empty, oneByte, thirteenBytes, headerOnly, runt20, runt59, truncatedIPv4, truncatedTCPHeader
    // Larger than the MTU (1500).
    case jumbo1515, jumbo1600, jumbo4000, jumbo9014, jumbo65000
    // Stacked VLAN tags.
    case qinq, qinqTriple, doubleDot1Q, qinqJumbo, qinqPriorityZero

    /// The virtio-net header (10 bytes: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
    /// little-endian); nil for plain frames.
    var header: [UInt8]? {
        func h(_ flags: UInt8, _ gso: UInt8, hdrLen: Int, gsoSize: Int, csumStart: Int, csumOffset: Int) -> [UInt8] {
            [flags, gso] + le(hdrLen) + le(gsoSize) + le(csumStart) + le(csumOffset)
        }
        switch self {
        case .gsoTCPv4: return h(1, 1, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .gsoTCPv4ECN: return h(1, 0x81, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .gsoTCPv6: return h(1, 4, hdrLen: 86, gsoSize: 1428, csumStart: 54, csumOffset: 16)
        case .gsoTCPv6ECN: return h(1, 0x84, hdrLen: 86, gsoSize: 1428, csumStart: 54, csumOffset: 16)
        case .gsoUDP: return h(1, 3, hdrLen: 42, gsoSize: 1400, csumStart: 34, csumOffset: 6)
        case .gsoUDPL4v4: return h(1, 5, hdrLen: 42, gsoSize: 1400, csumStart: 34, csumOffset: 6)
        case .gsoUDPL4v6: return h(1, 5, hdrLen: 62, gsoSize: 1400, csumStart: 54, csumOffset: 6)
        case .csumTCPv4: return h(1, 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 16)
        case .csumUDPv6: return h(1, 0, hdrLen: 0, gsoSize: 0, csumStart: 54, csumOffset: 6)
        case .dataValid: return h(2, 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0)
        case .hdrLenBeyondFrame: return h(1, 1, hdrLen: 60000, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .hdrLenZero: return h(1, 1, hdrLen: 0, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .hdrLenOne: return h(1, 1, hdrLen: 1, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .csumStartBeyondFrame: return h(1, 0, hdrLen: 0, gsoSize: 0, csumStart: 60000, csumOffset: 16)
        case .csumOffsetBeyondFrame: return h(1, 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 60000)
        case .csumStartInEthernetHeader: return h(1, 0, hdrLen: 0, gsoSize: 0, csumStart: 2, csumOffset: 2)
        case .gsoSizeZero: return h(1, 1, hdrLen: 66, gsoSize: 0, csumStart: 34, csumOffset: 16)
        case .gsoSizeOne: return h(1, 1, hdrLen: 66, gsoSize: 1, csumStart: 34, csumOffset: 16)
        case .gsoTypeUnknown: return h(1, 0x7f, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .gsoTypeReserved2: return h(1, 2, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        case .gsoTCPv4OnIPv6: return h(1, 1, hdrLen: 86, gsoSize: 1428, csumStart: 54, csumOffset: 16)
        case .gsoTCPv4OnARP: return h(1, 1, hdrLen: 42, gsoSize: 100, csumStart: 14, csumOffset: 16)
        case .gsoTCPv4OnRunt: return h(1, 1, hdrLen: 20, gsoSize: 8, csumStart: 14, csumOffset: 2)
        case .gsoWithoutNeedsCsum: return h(0, 1, hdrLen: 66, gsoSize: 1448, csumStart: 0, csumOffset: 0)
        case .unknownFlags: return h(0xfc, 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0)
        default: return nil
        }
    }

    func frame(dst: [UInt8], src: [UInt8]) -> [UInt8] {
        let eth = dst + src
        switch self {
        case .gsoTCPv4, .gsoTCPv4ECN, .hdrLenBeyondFrame, .hdrLenZero, .hdrLenOne, .gsoSizeZero, .gsoSizeOne, .gsoTypeUnknown,
             .gsoTypeReserved2, .gsoWithoutNeedsCsum:
            return tcp4(eth, payload: 4000)
        case .gsoTCPv6, .gsoTCPv6ECN, .gsoTCPv4OnIPv6: return tcp6(eth, payload: 4000)
        case .gsoUDP, .gsoUDPL4v4: return udpFrame(dst: dst, src: src, totalLength: 3042)
        case .gsoUDPL4v6: return udp6(eth, payload: 3000)
        case .csumTCPv4, .csumStartBeyondFrame, .csumOffsetBeyondFrame, .csumStartInEthernetHeader: return tcp4(eth, payload: 100)
        case .csumUDPv6: return udp6(eth, payload: 100)
        case .dataValid, .unknownFlags: return udpFrame(dst: dst, src: src, totalLength: 200)
        case .gsoTCPv4OnARP: return eth + [0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1] + src + [10, 0, 0, 1] + Array(repeating: 0, count: 6) + [10, 0, 0, 2]
        case .gsoTCPv4OnRunt: return eth + [0x08, 0x00, 0x45, 0]
        case .empty: return []
        case .oneByte: return [0xff]
        case .thirteenBytes: return Array(eth.prefix(12)) + [0x08]
        case .headerOnly: return eth + [0x08, 0x00]
        case .runt20: return eth + [0x88, 0xB5] + Array(repeating: 1, count: 6)
        case .runt59: return eth + [0x88, 0xB5] + Array(repeating: 1, count: 45)
        case .truncatedIPv4: return eth + [0x08, 0x00, 0x45, 0, 0x05, 0xdc, 0, 1]
        case .truncatedTCPHeader: return Array(tcp4(eth, payload: 0).prefix(40))
        case .jumbo1515: return plain(eth, length: 1515)
        case .jumbo1600: return plain(eth, length: 1600)
        case .jumbo4000: return plain(eth, length: 4000)
        case .jumbo9014: return plain(eth, length: 9014)
        case .jumbo65000: return plain(eth, length: 65000)
        case .qinq: return eth + [0x88, 0xA8, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14, 0x88, 0xB5] + Array(repeating: 2, count: 46)
        case .qinqTriple:
            return eth + [0x88, 0xA8, 0x00, 0x0A, 0x88, 0xA8, 0x00, 0x0B, 0x81, 0x00, 0x00, 0x14, 0x88, 0xB5] + Array(repeating: 2, count: 46)
        case .doubleDot1Q: return eth + [0x81, 0x00, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14, 0x88, 0xB5] + Array(repeating: 2, count: 46)
        case .qinqJumbo: return eth + [0x88, 0xA8, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14, 0x88, 0xB5] + Array(repeating: 2, count: 3000)
        case .qinqPriorityZero: return eth + [0x88, 0xA8, 0xE0, 0x00, 0x81, 0x00, 0x00, 0x00, 0x08, 0x00] + Array(repeating: 0, count: 46)
        }
    }

    private func le(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8((v >> 8) & 0xff)] }

    private func plain(_ eth: [UInt8], length: Int) -> [UInt8] { eth + [0x88, 0xB5] + Array(repeating: 3, count: length - 14) }

    private func tcp4(_ eth: [UInt8], payload: Int) -> [UInt8] {
        let ipLength = 20 + 32 + payload
        var f = eth + [0x08, 0x00, 0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0, 1, 0x40, 0, 64, 6, 0, 0,
                       10, 0, 0, 1, 10, 0, 0, 2]
        f += [0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]
        f += [1, 1, 8, 10] + Array(repeating: 0, count: 8)  // NOP NOP timestamps: a 32-byte TCP header
        return f + Array(repeating: 0x5a, count: payload)
    }

    private func tcp6(_ eth: [UInt8], payload: Int) -> [UInt8] {
        let l4 = 32 + payload
        var f = eth + [0x86, 0xDD, 0x60, 0, 0, 0, UInt8(l4 >> 8), UInt8(l4 & 0xff), 6, 64]
        f += [0xfd] + Array(repeating: 0, count: 14) + [1] + [0xfd] + Array(repeating: 0, count: 14) + [2]
        f += [0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x10, 0xff, 0xff, 0, 0, 0, 0]
        f += [1, 1, 8, 10] + Array(repeating: 0, count: 8)
        return f + Array(repeating: 0x5a, count: payload)
    }

    private func udp6(_ eth: [UInt8], payload: Int) -> [UInt8] {
        let l4 = 8 + payload
        var f = eth + [0x86, 0xDD, 0x60, 0, 0, 0, UInt8(l4 >> 8), UInt8(l4 & 0xff), 17, 64]
        f += [0xfd] + Array(repeating: 0, count: 14) + [1] + [0xfd] + Array(repeating: 0, count: 14) + [2]
        f += [0x30, 0x39, 0x30, 0x3a, UInt8(l4 >> 8), UInt8(l4 & 0xff), 0, 0]
        return f + Array(repeating: 0, count: payload)
    }
}
