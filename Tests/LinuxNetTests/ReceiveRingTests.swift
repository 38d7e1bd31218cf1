import CTapShim
import FakeVM
import LinuxNet
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// One ring slot, copied out for assertions.
struct RingFrame {
    var bytes: [UInt8]
    var originalLength: Int
    var vnetHeader: [UInt8]?
    var vlanTCI: UInt16?
    var vlanTPID: UInt16?
    var isCopied: Bool
    var isTruncated: Bool
    var packetType: UInt8
    var frameOffset: Int
}

/// A ring-enabled PacketSocket on a TAP plus its mapped ReceiveRing.
final class RingPort {
    static let options = PacketSocket.Options(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true)
    let socket: PacketSocket
    let ring: ReceiveRing

    init(_ link: LinkInfo, geometry: ReceiveRing.Geometry = .init(), options: PacketSocket.Options = RingPort.options) throws {
        var options = options
        options.receiveRing = geometry
        socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: options)
        ring = try ReceiveRing(fileDescriptor: socket.fileDescriptor, geometry: geometry, interfaceName: link.name)
    }

    var fd: Int32 { socket.fileDescriptor }

    /// Copies out the current slot (call only after `ring.next()` returned true).
    func current() -> RingFrame {
        RingFrame(
            bytes: Array(UnsafeRawBufferPointer(start: ring.frame, count: ring.frameLength)),
            originalLength: ring.originalLength,
            vnetHeader: ring.vnetHeader.map { Array(UnsafeRawBufferPointer(start: $0, count: 10)) },
            vlanTCI: ring.vlanTCI, vlanTPID: ring.vlanTPID, isCopied: ring.isCopied,
            isTruncated: ring.isTruncated, packetType: ring.packetType,
            frameOffset: ring.frameOffset)
    }

    /// Takes frames from the ring (releasing each) until `count` arrived or `timeout` passed, waiting with poll.
    func take(_ count: Int, timeout: Duration = .seconds(2)) throws -> [RingFrame] {
        var frames: [RingFrame] = []
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while frames.count < count {
            while frames.count < count, ring.next() {
                frames.append(current())
                ring.release()
            }
            if frames.count == count { break }
            let remaining = clock.now.duration(to: deadline)
            if remaining <= .zero { break }
            _ = isReadable(fd, within: remaining)
        }
        return frames
    }
}

/// poll(POLLIN) with `timeout` as the deadline.
func isReadable(_ fd: Int32, within timeout: Duration) -> Bool {
    var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let (seconds, attoseconds) = timeout.components
    let ms = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    while true {
        let ready = poll(&pollFD, 1, ms)
        if ready < 0 && errno == EINTR { continue }
        return ready > 0 && pollFD.revents & Int16(POLLIN) != 0
    }
}

extension Privileged {
    @Suite("TPACKET_V2 receive ring on a TAP")
    struct ReceiveRingTests {
        init() throws {
            try Privilege.requireNetAdmin()
            ignoreSIGPIPE()
        }

        let vmMAC = TestFrames.mac(1)
        let peerMAC = TestFrames.mac(2)

        func numbered(_ i: Int, size: Int = 60) -> [UInt8] {
            TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5,
                                payload: [UInt8(i >> 8), UInt8(i & 0xff)] + Array(repeating: UInt8(truncatingIfNeeded: i), count: size + i % 7))
        }

        @Test("frames from the VM appear in order with exact bytes; slots are reused after wrap-around")
        func inOrderAndWrapAround() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rring", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let geometry = ReceiveRing.Geometry()  // 256 x 2048
            let port = try RingPort(link, geometry: geometry)
            #expect(geometry.blockSize == ReceiveRing.Geometry.pageSize && geometry.framesPerBlock == ReceiveRing.Geometry.pageSize / 2048)

            // 5 rounds of 100 frames: 500 > 256 slots, so every slot is used about twice.
            var next = 0
            for round in 0..<5 {
                let frames = (0..<100).map { numbered(next + $0) }
                for frame in frames { try vm.send(frame) }
                let got = try port.take(frames.count)
                try #require(got.count == frames.count, "round \(round): \(got.count) of \(frames.count) frames")
                for (frame, slot) in zip(frames, got) {
                    #expect(slot.bytes == frame)
                    #expect(slot.originalLength == frame.count)
                    #expect(slot.vnetHeader == [UInt8](repeating: 0, count: 10))
                    #expect(!slot.isCopied && slot.vlanTCI == nil && slot.vlanTPID == nil)
                    #expect(slot.packetType == UInt8(PACKET_OTHERHOST))
                }
                next += frames.count
            }
            #expect(port.ring.position == 500 % 256)
            #expect(!port.ring.next())
            let stats = try port.ring.statistics()
            #expect(stats == PacketStatistics(delivered: 500, dropped: 0))
        }

        @Test("slot layout: tp_mac = TPACKET_ALIGN(TPACKET2_HDRLEN + 16) + 10 - 14, vnet header right before")
        func layout() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rlay", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let port = try RingPort(link)
            #expect(port.ring.hasVnetHeader)
            let frame = TestFrames.broadcast(src: vmMAC, payload: Array(repeating: 0x42, count: 50))  // 64 bytes
            try vm.send(frame)
            let got = try port.take(1)
            try #require(got.count == 1)
            let expected = (Int(TS_TPACKET2_HDRLEN) + 16 + 15) & ~15 + 10 - 14
            #expect(got[0].frameOffset == expected, "tp_mac of a \(frame.count)-byte frame with vnet header: \(got[0].frameOffset)")
            #expect(expected == 76)
            #expect(got[0].bytes == frame)
            #expect(got[0].packetType == UInt8(PACKET_BROADCAST))

            // Without PACKET_VNET_HDR there is no header pointer and the frame starts 10 bytes earlier.
            let plain = try RingPort(link, options: .init(vnetHeader: false, auxData: false, ignoreOutgoing: true, qdiscBypass: true))
            #expect(!plain.ring.hasVnetHeader)
            try vm.send(frame)
            let plainGot = try plain.take(1)
            try #require(plainGot.count == 1)
            #expect(plainGot[0].vnetHeader == nil)
            #expect(plainGot[0].frameOffset == expected - 10)
            #expect(plainGot[0].bytes == frame)
        }

        @Test("an 802.1Q tag is stripped from the frame into the slot's TCI and TPID")
        func vlan() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rvlan", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let port = try RingPort(link)
            let tci: UInt16 = 0x2064  // PCP 1, VID 100
            let payload: [UInt8] = Array(repeating: 0xab, count: 64)
            try vm.send(TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, vlan: tci, payload: payload))
            try vm.send(TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: payload))
            let got = try port.take(2)
            try #require(got.count == 2)
            let untagged = TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: payload)
            #expect(got[0].vlanTCI == tci)
            #expect(got[0].vlanTPID == 0x8100)
            #expect(got[0].bytes == untagged)
            #expect(got[0].originalLength == untagged.count)
            #expect(got[1].vlanTCI == nil && got[1].vlanTPID == nil, "the tag status must not leak into the next slot")
        }

        @Test("a GSO superframe bigger than a slot arrives as TP_STATUS_COPY; one recvmsg returns it whole with its vnet header")
        func gsoCopy() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rgso", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let geometry = ReceiveRing.Geometry(frameSize: 2048, frameCount: 16)
            let port = try RingPort(link, geometry: geometry)
            let frame = tcpFrame(dst: TestFrames.mac(2), src: TestFrames.mac(1), payloadLength: 20_000)
            let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                         headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
            let small = numbered(1)
            try vm.send(vnetHeader: header.bytes, frame: frame)
            try vm.send(small)

            try #require(isReadable(port.fd, within: .seconds(2)))
            try #require(port.ring.next())
            let slot = port.current()
            #expect(slot.isCopied)
            #expect(!port.ring.isTruncated)
            #expect(slot.originalLength == frame.count)
            #expect(slot.bytes.count == geometry.frameSize - slot.frameOffset, "the slot holds the first part, cut to the slot")
            #expect(slot.bytes == Array(frame.prefix(slot.bytes.count)))
            #expect(VirtioNetHeader(try #require(slot.vnetHeader)) == header, "the slot's vnet header is filled too")
            port.ring.release()

            // The whole frame waits in the receive queue.
            let vector = ReceiveVector(capacity: 1)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 65536 + 64, alignment: 16)
            defer { buffer.deallocate() }
            vector.setBuffer(0, base: buffer, length: 65536 + 64)
            #expect(vector.receive(from: port.fd, max: 1) == .done(1))
            let whole = Array(UnsafeRawBufferPointer(start: buffer, count: vector.length(0)))
            #expect(whole.count == 10 + frame.count)
            #expect(VirtioNetHeader(whole) == header, "\(VirtioNetHeader(whole))")
            #expect(Array(whole.dropFirst(10)) == frame)
            #expect(vector.receive(from: port.fd, max: 1) == .wouldBlock, "exactly one copy is queued")

            // The small frame after it is an ordinary slot, and then the fd goes quiet.
            let rest = try port.take(1)
            try #require(rest.count == 1)
            #expect(rest[0].bytes == small && !rest[0].isCopied)
            #expect(!isReadable(port.fd, within: .zero))
        }

        @Test("with the receive buffer full, an oversized frame is cut to the slot without a copy: isTruncated")
        func truncatedWithoutCopy() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rtrnc", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            var options = RingPort.options
            options.receiveBuffer = 4096  // the kernel's minimum is about this: room for no more than one copy
            let port = try RingPort(link, geometry: .init(frameSize: 2048, frameCount: 8), options: options)
            let frame = tcpFrame(dst: TestFrames.mac(2), src: TestFrames.mac(1), payloadLength: 20_000)
            let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                         headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
            try vm.send(vnetHeader: header.bytes, frame: frame)
            try vm.send(vnetHeader: header.bytes, frame: frame)
            let got = try port.take(2)
            try #require(got.count == 2)
            #expect(got[0].isCopied, "the first copy fits the empty receive buffer")
            #expect(!got[0].isTruncated)
            #expect(!got[1].isCopied && got[1].isTruncated, "the second finds the receive buffer full")
            #expect(got[1].originalLength == frame.count && got[1].bytes.count < frame.count)
            #expect(got[1].bytes == Array(frame.prefix(got[1].bytes.count)))
        }

        @Test("the fd polls readable exactly while the ring holds a user slot")
        func readiness() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rpoll", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let port = try RingPort(link, geometry: .init(frameSize: 2048, frameCount: 8))
            #expect(!port.ring.next())
            #expect(!isReadable(port.fd, within: .zero))
            #expect(!isReadable(port.fd, within: .milliseconds(50)))

            try vm.send(numbered(7))
            #expect(isReadable(port.fd, within: .seconds(2)))
            #expect(port.ring.next())
            #expect(isReadable(port.fd, within: .zero), "still readable until released")
            #expect(port.current().bytes == numbered(7))
            port.ring.release()
            #expect(!port.ring.next())
            #expect(!isReadable(port.fd, within: .zero), "quiet again after release")
        }

        @Test("overflow: the ring keeps the first frameCount frames and statistics count the drops")
        func overflow() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rover", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let geometry = ReceiveRing.Geometry(frameSize: 2048, frameCount: 8)
            let port = try RingPort(link, geometry: geometry)
            let frames = (0..<20).map { numbered($0) }
            for frame in frames { try vm.send(frame) }

            var total = PacketStatistics(delivered: 0, dropped: 0)
            try waitUntil("all 20 frames delivered or dropped", timeout: .seconds(2)) {
                let stats = try port.ring.statistics()  // reading resets: accumulate
                total.delivered += stats.delivered
                total.dropped += stats.dropped
                return total.delivered + total.dropped >= frames.count
            }
            #expect(total == PacketStatistics(delivered: 8, dropped: 12))
            var got: [[UInt8]] = []
            while port.ring.next() {
                got.append(port.current().bytes)
                port.ring.release()
                if got.count > geometry.frameCount { break }
            }
            #expect(got == Array(frames.prefix(geometry.frameCount)))
            #expect(try port.ring.statistics() == PacketStatistics(delivered: 0, dropped: 0), "statistics reset on read")

            // After releasing, the ring takes frames again.
            try vm.send(numbered(99))
            #expect(try port.take(1).map(\.bytes) == [numbered(99)])
        }

        @Test("a bad geometry is refused with a message naming the problem and the device")
        func badGeometry() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rbad", cleanup: cleanup)
            func refusal(_ geometry: ReceiveRing.Geometry) -> String {
                do {
                    _ = try RingPort(link, geometry: geometry)
                    return "accepted"
                } catch {
                    return "\(error)"
                }
            }
            let page = ReceiveRing.Geometry.pageSize
            #expect(refusal(.init(frameSize: 2048, frameCount: 3))
                == "PACKET_RX_RING on '\(link.name)': Invalid argument (EINVAL): ring frameCount 3 is not a multiple of \(page / 2048), "
                + "the frames per \(page)-byte block (frameSize 2048, page size \(page))")
            #expect(refusal(.init(frameSize: 2040, frameCount: 8)).contains("ring frameSize 2040 is not a multiple of TPACKET_ALIGNMENT (16)"))
            #expect(refusal(.init(frameSize: 64, frameCount: 8)).contains("ring frameSize 64 is below the minimum of 128 bytes"))
            #expect(refusal(.init(frameSize: 2048, frameCount: 0)).contains("ring frameCount 0 must be positive"))
            // A frame size that does not divide the block: 3 slots of 1360 per 4 KiB page, the rest unused.
            #expect(refusal(.init(frameSize: 1360, frameCount: 3 * (page / 1360))) == "accepted")

            // Mapping a socket that has no ring, or a ring of another size.
            let plain = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: .init())
            #expect(throws: SystemError.self) {
                _ = try ReceiveRing(fileDescriptor: plain.fileDescriptor, geometry: .init(), interfaceName: link.name)
            }
            let ringed = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name,
                                          options: .init(receiveRing: .init(frameSize: 2048, frameCount: 8)))
            #expect {
                _ = try ReceiveRing(fileDescriptor: ringed.fileDescriptor, geometry: .init(frameSize: 2048, frameCount: 16),
                                    interfaceName: link.name)
            } throws: { error in
                "\(error)".hasPrefix("mmap(PACKET_RX_RING) on '\(link.name)': Invalid argument (EINVAL): the socket has no receive ring")
            }
        }

        @Test("once a ring exists the kernel refuses PACKET_VNET_HDR and PACKET_VERSION (EBUSY): PacketSocket sets them first")
        func optionOrder() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rord", cleanup: cleanup)
            let socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name,
                                          options: .init(vnetHeader: false, receiveRing: .init(frameSize: 2048, frameCount: 8)))
            var one: Int32 = 1
            errno = 0
            #expect(setsockopt(socket.fileDescriptor, SOL_PACKET, PACKET_VNET_HDR, &one, socklen_t(MemoryLayout<Int32>.size)) == -1)
            #expect(errno == EBUSY)
            var version = Int32(TPACKET_V2.rawValue)
            errno = 0
            #expect(setsockopt(socket.fileDescriptor, SOL_PACKET, PACKET_VERSION, &version, socklen_t(MemoryLayout<Int32>.size)) == -1)
            #expect(errno == EBUSY)
        }

        @Test("uneven slots (frame size not dividing the block) are addressed correctly")
        func unevenSlots() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("runev", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name, vnetHeader: true)
            defer { vm.close() }
            let port = try RingPort(link, geometry: .init(frameSize: 1360, frameCount: 3 * (ReceiveRing.Geometry.pageSize / 1360)))
            let frames = (0..<20).map { numbered($0, size: 1200) }
            var got: [[UInt8]] = []
            for chunk in stride(from: 0, to: frames.count, by: 5) {
                for frame in frames[chunk..<chunk + 5] { try vm.send(frame) }
                got += try port.take(5).map(\.bytes)
            }
            #expect(got == frames)
        }
    }
}
