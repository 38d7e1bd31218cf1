import DataPlane
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing

/// Frames a guest can write that must not take its port (or anyone else's) down.
@Suite("Hostile frames from guests", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct HostileFrameTests {
    let names = UniqueNames.run

    /// Issue 12, finding 1: one UDP fragmentation-offload (UFO) frame written by a guest used to stop
    /// every later frame of that port at the kernel (all counted as `receive ring full`).
    @Test("issue 12 finding 1: a UFO frame from a guest does not kill its port's ingress (slow path only, and with the fast path's receive filter)",
          arguments: UFOFrame.allCases, [false, true])
    func ufoFrameDoesNotKillIngress(_ ufo: UFOFrame, offload: Bool) async throws {
        try await withRuntime { rt, log, cleanup in
            if offload {
                let line = await rt.setOffload(enabled: true)
                try #require(line.hasPrefix("offload xdp:"), "fast path not loaded: \(line) (scripts/build-bpf)")
            }
            let taps = [names.name("ua"), names.name("ub")]
            let vms = try await twoLearnedVMs(rt, log, cleanup, names: taps, mac: 0x60, offloads: [true, true])
            defer { vms.forEach { $0.close() } }
            let before = try #require(await rt.counters(taps[0])).framesIn

            let (header, superframe) = ufo.make(dst: mac(0x61).bytes, src: mac(0x60).bytes)
            try vms[0].send(vnetHeader: header, frame: superframe)

            // The port keeps forwarding: 100 ordinary frames from A all reach B.
            for k in 0..<100 {
                let frame = TestFrames.ethernet(dst: mac(0x61).bytes, src: mac(0x60).bytes, etherType: 0x88B5,
                                                payload: [UInt8(k)] + Array(repeating: 9, count: 45))
                try vms[0].send(vnetHeader: Array(repeating: 0, count: 10), frame: frame)
            }
            var received = 0
            while received < 100, let got = try vms[1].receiveWithHeader(timeout: .seconds(2)) {
                if got.frame.count == 60, got.frame[12] == 0x88, got.frame[13] == 0xB5 { received += 1 }
            }
            #expect(received == 100, "frames after the UFO frame must still be forwarded")
            // A full-size UDP frame (no superframe) still crosses: only UDP longer than MTU + header is cut.
            let fullSize = udpFrame(dst: mac(0x61).bytes, src: mac(0x60).bytes, totalLength: 1514)
            try vms[0].send(vnetHeader: Array(repeating: 0, count: 10), frame: fullSize)
            // Wait for that frame, not for whatever arrives next (it failed once in CI's TSan step with a
            // different first frame or none within 2 s; never alone): other frames are listed if it never comes.
            var others: [Int] = []
            var crossed = false
            while !crossed, let got = try vms[1].receiveWithHeader(timeout: .seconds(5)) {
                if got.frame == fullSize { crossed = true } else { others.append(got.frame.count) }
            }
            #expect(crossed, "the full-size UDP frame did not arrive; other frames' sizes: \(others)")
            let counters = try #require(await rt.counters(taps[0]))
            #expect(counters.framesIn - before >= 100)
            #expect(counters.drops[.init(direction: .ingress, reason: "receive ring full", reporter: "device")] == nil, "\(counters.drops)")
        }
    }
}

/// UDP fragmentation-offload superframes a guest can write (virtio-net gso_type 3, NEEDS_CSUM, gso_size 1400).
enum UFOFrame: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// As in the report: hdr_len 42, csum 34/6, a 3042-byte IPv4/UDP frame.
    case ipv4
    /// The same over IPv6 (hdr_len 62, csum 54/6).
    case ipv6
    /// IPv4 behind an 802.1ad outer and an 802.1Q inner tag (the kernel lifts only the outer one).
    case ipv4QinQ

    var testDescription: String { rawValue }

    func make(dst: [UInt8], src: [UInt8]) -> (header: [UInt8], frame: [UInt8]) {
        switch self {
        case .ipv4:
            return ([1, 3, 42, 0, 0x78, 0x05, 34, 0, 6, 0], udpFrame(dst: dst, src: src, totalLength: 3042))
        case .ipv6:
            var f = dst + src + [0x86, 0xDD]
            let payload = 3000 + 8
            f += [0x60, 0, 0, 0, UInt8(payload >> 8), UInt8(payload & 0xff), 17, 64]
            f += [0xfd] + Array(repeating: 0, count: 14) + [1] + [0xfd] + Array(repeating: 0, count: 14) + [2]
            f += [0x30, 0x39, 0x30, 0x3a, UInt8(payload >> 8), UInt8(payload & 0xff), 0, 0]
            f += Array(repeating: 0, count: 3000)
            return ([1, 3, 62, 0, 0x78, 0x05, 54, 0, 6, 0], f)
        case .ipv4QinQ:
            let inner = udpFrame(dst: dst, src: src, totalLength: 3042)
            let f = Array(inner[0..<12]) + [0x88, 0xA8, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14] + Array(inner[12...])
            return ([1, 3, 50, 0, 0x78, 0x05, 42, 0, 6, 0], f)
        }
    }
}

/// An Ethernet + IPv4 + UDP frame of `totalLength` bytes (payload zeros; checksums left for offload).
func udpFrame(dst: [UInt8], src: [UInt8], totalLength: Int) -> [UInt8] {
    let ipLength = totalLength - 14
    let udpLength = ipLength - 20
    var f = dst + src + [0x08, 0x00]
    f += [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xff), 0, 1, 0, 0, 64, 17, 0, 0,
          10, 0, 0, 1, 10, 0, 0, 2]
    f += [0x30, 0x39, 0x30, 0x3a, UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0]
    f += Array(repeating: 0, count: totalLength - f.count)
    return f
}

/// Who may become a VM's NIC.
@Suite("TAP access for other users", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct TAPAccessTests {
    let names = UniqueNames.run

    /// Issue 12, finding 2: a TAP started without `owner` had owner and group -1, which the kernel
    /// reads as "anyone who can open /dev/net/tun".
    @Test("issue 12 finding 2: a TAP started without owner cannot be attached by another user; with owner, that user can")
    func tapWithoutOwnerIsRootOnly() async throws {
        try await withRuntime { rt, _, cleanup in
            let closed = names.name("ro")
            let shared = names.name("rs")
            try await rt.startTestVM(closed, mac: mac(0xD0), cleanup: cleanup)
            cleanup.deleteLink(shared)
            try await rt.startVMNIC(VMNICSpec(vmName: "vm-" + shared, tap: shared, mac: mac(0xD1), owner: 65534))
            #expect(TapDevice.attributes(closed)?.owner == 0)
            #expect(try attachAsNobody(closed) == "EPERM")
            #expect(try attachAsNobody(shared) == "attached", "the configured owner may attach (positive control)")
        }
    }

    /// Attaches to `tap` the way QEMU does, as uid/gid 65534 with no capabilities. /dev/net/tun is
    /// opened before the privileges are dropped (on this host it is root-only itself), so only the
    /// TAP's own owner check decides. Returns "attached" or the errno's name.
    func attachAsNobody(_ tap: String) throws -> String {
        let script = """
            import errno, fcntl, struct, sys
            try:
                fcntl.ioctl(3, 0x400454ca, struct.pack('16sH', sys.argv[1].encode(), 0x0002 | 0x1000))
                print('attached')
            except OSError as e:
                print(errno.errorcode.get(e.errno, e.errno))
            """
        let result = try Shell.run(["bash", "-c", "exec 3<>/dev/net/tun && exec setpriv --reuid=65534 --regid=65534 --clear-groups "
                                        + "/usr/bin/python3 -c \"$0\" \"$1\"", script, tap])
        try #require(result.status == 0, "helper failed: \(result.stderr)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
