import FakeVM
import LinuxNet
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

extension Privileged {
    @Suite("PacketSocket with ReceiveVector / SendVector on a TAP")
    struct PacketIOTests {
        init() throws {
            try Privilege.requireNetAdmin()
            ignoreSIGPIPE()
        }

        static let switchOptions = PacketSocket.Options(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true)
        let vmMAC = TestFrames.mac(1)
        let peerMAC = TestFrames.mac(2)

        @Test("a frame written by the VM arrives intact after a zero virtio-net header")
        func receivesFromVM() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rx", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let receiver = try Receiver(link, options: Self.switchOptions)
            let frame = TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: Array(0..<100))
            try vm.send(frame)
            let got = try receiver.receive(timeout: .seconds(2))
            try #require(got.count == 1)
            #expect(got[0].bytes.count == 10 + frame.count)
            #expect(VirtioNetHeader(got[0].bytes) == VirtioNetHeader(), "plain frame has no offload: \(VirtioNetHeader(got[0].bytes))")
            #expect(Array(got[0].bytes.dropFirst(10)) == frame)
            #expect(!got[0].truncated)
            #expect(got[0].vlanTCI == nil)
        }

        @Test("a VLAN tag is moved out of the frame into auxdata")
        func vlanInAuxData() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("vlan", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let receiver = try Receiver(link, options: Self.switchOptions)
            let tci: UInt16 = 0x2064  // PCP 1, VID 100
            let payload: [UInt8] = Array(repeating: 0xab, count: 64)
            try vm.send(TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, vlan: tci, payload: payload))
            let got = try receiver.receive(timeout: .seconds(2))
            try #require(got.count == 1)
            #expect(got[0].vlanTCI == tci)
            #expect(got[0].vlanTPID == 0x8100)
            let untagged = TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: payload)
            #expect(Array(got[0].bytes.dropFirst(10)) == untagged)
        }

        @Test("a truncated receive is flagged")
        func truncation() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("trunc", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: .init(vnetHeader: false))
            let vector = ReceiveVector(capacity: 1)
            let small = UnsafeMutableRawPointer.allocate(byteCount: 32, alignment: 8)
            defer { small.deallocate() }
            vector.setBuffer(0, base: small, length: 32)
            try vm.send(TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: Array(repeating: 1, count: 200)))
            var result = IOResult.wouldBlock
            try waitUntil("frame received", timeout: .seconds(2)) {
                result = vector.receive(from: socket.fileDescriptor, max: 1)
                return result != .wouldBlock
            }
            #expect(result == .done(1))
            #expect(vector.isTruncated(0))
            #expect(vector.length(0) == 32)
        }

        @Test("a transmit-only socket (receives: false) sends to the VM and never receives what the VM sends")
        func transmitOnly() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("to", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            try waitForOperUp(link.name)
            let sender = try Receiver(link, options: .init(vnetHeader: true, auxData: false, ignoreOutgoing: false, qdiscBypass: true,
                                                           receives: false))
            let control = try Receiver(link, options: Self.switchOptions)
            let out = TestFrames.ethernet(dst: vmMAC, src: peerMAC, etherType: 0x88b5, payload: Array(repeating: 0x42, count: 50))
            #expect(sendBatch([out], header: VirtioNetHeader().bytes, to: sender.fd) == .sent(1))
            #expect(try vm.receive(timeout: .seconds(2)) == out)
            let back = TestFrames.ethernet(dst: peerMAC, src: vmMAC, etherType: 0x88b5, payload: Array(0..<60))
            try vm.send(back)
            // The control socket proves the frame reached the device; the transmit-only one saw nothing.
            #expect(try control.receive(timeout: .seconds(2)).map { Array($0.bytes.dropFirst(10)) } == [back])
            #expect(try sender.receive(timeout: .milliseconds(100)).isEmpty)
        }

        @Test("SendVector reaches the VM; with PACKET_IGNORE_OUTGOING the sender does not see its own sends")
        func sendsToVM() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("tx", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            try waitForOperUp(link.name)
            // Through the qdisc, outgoing frames are shown to every packet socket on the device ...
            let sender = try Receiver(link, options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: false))
            // ... so a socket without PACKET_IGNORE_OUTGOING (the control) sees them.
            let observer = try Receiver(link, options: .init(vnetHeader: false, auxData: false, ignoreOutgoing: false, qdiscBypass: false))
            let frames = (0..<5).map { i in
                TestFrames.ethernet(dst: vmMAC, src: peerMAC, etherType: 0x88b5, payload: [UInt8(i)] + Array(repeating: 0x55, count: 50))
            }
            #expect(sendBatch(frames, header: VirtioNetHeader().bytes, to: sender.fd) == .sent(5))
            for frame in frames {
                #expect(try vm.receive(timeout: .seconds(2)) == frame)
            }
            #expect(try vm.receive(timeout: .milliseconds(50)) == nil)
            var observed: [Received] = []
            try waitUntil("observer sees the 5 outgoing frames", timeout: .seconds(2)) {
                observed += try observer.receive(timeout: .milliseconds(20))
                return observed.count >= 5
            }
            #expect(observed.map(\.bytes) == frames)
            #expect(observed.allSatisfy { $0.packetType == 4 /* PACKET_OUTGOING */ })
            #expect(try sender.receive(timeout: .milliseconds(100)).isEmpty, "the sender must not see its own frames")
        }

        @Test("under qdisc bypass no packet socket sees the sends, not even one without PACKET_IGNORE_OUTGOING")
        func bypassIsInvisible() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("txb", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let sender = try Receiver(link, options: Self.switchOptions)
            let observer = try Receiver(link, options: .init(vnetHeader: false, auxData: false, ignoreOutgoing: false, qdiscBypass: false))
            let frame = TestFrames.ethernet(dst: vmMAC, src: peerMAC, etherType: 0x88b5, payload: [1, 2, 3])
            #expect(sendBatch([frame], header: VirtioNetHeader().bytes, to: sender.fd) == .sent(1))
            #expect(try vm.receive(timeout: .seconds(2)) == frame)
            #expect(try observer.receive(timeout: .milliseconds(100)).isEmpty)
            #expect(try sender.receive(timeout: .milliseconds(10)).isEmpty)
        }

        @Test("the SendVector writev path and ReceiveVector read path work on a TAP fd")
        func tunFDPaths() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("tunfd", cleanup: cleanup)
            // An "internal port": the switch itself holds a queue fd of a TAP.
            let fd = try attachFresh(link.name, vnetHeader: true)
            defer { close(fd) }
            let observer = try Receiver(link, options: Self.switchOptions)
            let frames = (0..<3).map { TestFrames.ethernet(dst: vmMAC, src: peerMAC, etherType: 0x88b5, payload: [UInt8($0)]) }
            #expect(sendBatch(frames, header: VirtioNetHeader().bytes, to: fd, tun: true) == .sent(3))
            var got: [Received] = []
            try waitUntil("socket receives the 3 frames written to the TAP fd", timeout: .seconds(2)) {
                got += try observer.receive(timeout: .milliseconds(20))
                return got.count >= 3
            }
            #expect(got.map { Array($0.bytes.dropFirst(10)) } == frames)

            // And the other way: frames sent on the socket are read from the TAP fd in one batch.
            #expect(sendBatch(frames, header: VirtioNetHeader().bytes, to: observer.fd) == .sent(3))
            let vector = ReceiveVector(capacity: 8)
            let buffers = UnsafeMutableRawPointer.allocate(byteCount: 8 * 2048, alignment: 16)
            defer { buffers.deallocate() }
            for i in 0..<8 { vector.setBuffer(i, base: buffers + i * 2048, length: 2048) }
            var result = IOResult.wouldBlock
            try waitUntil("TAP fd readable", timeout: .seconds(2)) {
                result = vector.read(from: fd, max: 8)
                return result != .wouldBlock
            }
            guard case .done(let count) = result else { Issue.record("read failed: \(result)"); return }
            #expect(count >= 1)
            for i in 0..<count {
                let bytes = Array(UnsafeRawBufferPointer(start: buffers + i * 2048, count: vector.length(i)))
                #expect(Array(bytes.dropFirst(10)) == frames[i])
                #expect(vector.vlanTCI(i) == nil)
            }
        }

        @Test("sending into a TAP with nobody attached: ENOBUFS under qdisc bypass, silent drop through the qdisc")
        func noReader() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("norx", cleanup: cleanup)
            let bypass = try Receiver(link, options: Self.switchOptions)
            let qdisc = try Receiver(link, options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: false))
            let frame = TestFrames.broadcast(src: peerMAC)
            #expect(sendBatch([frame, frame], header: VirtioNetHeader().bytes, to: bypass.fd) == .failed(sent: 0, errno: ENOBUFS))
            #expect(sendBatch([frame, frame], header: VirtioNetHeader().bytes, to: qdisc.fd) == .sent(2))

            // Admin down: ENETDOWN on either path.
            try RouteNetlink().setLink(link.name, up: false)
            #expect(sendBatch([frame], header: VirtioNetHeader().bytes, to: bypass.fd) == .failed(sent: 0, errno: ENETDOWN))
        }

        @Test("a VM that does not read: the TAP queues txqueuelen frames, then ENOBUFS under bypass")
        func fullQueue() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("full", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let sender = try Receiver(link, options: Self.switchOptions)
            let frame = TestFrames.broadcast(src: peerMAC)
            let batch = Array(repeating: frame, count: 64)
            var total = 0
            var refusal: Int32 = 0
            for _ in 0..<40 {
                switch sendBatch(batch, header: VirtioNetHeader().bytes, to: sender.fd) {
                case .sent(let n): total += n
                case .failed(let n, let code):
                    total += n
                    refusal = code
                }
                if refusal != 0 { break }
            }
            #expect(refusal == ENOBUFS)
            #expect(total == 1000, "txqueuelen is 1000; \(total) frames were accepted")
            #expect(try vm.drain() == total)
        }

        @Test("deleting the TAP under a bound socket: SO_ERROR ENETDOWN, then ENXIO/ENETDOWN on send")
        func deletedUnderSocket() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("gone", cleanup: cleanup)
            let receiver = try Receiver(link, options: Self.switchOptions)
            try RouteNetlink().deleteLink(link.name)
            var pollFD = pollfd(fd: receiver.fd, events: Int16(POLLIN), revents: 0)
            #expect(poll(&pollFD, 1, 1000) == 1)
            #expect(pollFD.revents & Int16(POLLERR) != 0)
            #expect(receiver.socket.pendingError() == ENETDOWN)
            let result = sendBatch([TestFrames.broadcast(src: peerMAC)], header: VirtioNetHeader().bytes, to: receiver.fd)
            #expect(result == .failed(sent: 0, errno: ENXIO) || result == .failed(sent: 0, errno: ENETDOWN), "\(result)")
        }

        @Test("release() hands the fd over without closing it")
        func release() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("rel", cleanup: cleanup)
            let socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: .init())
            let fd = socket.release()
            #expect(fcntl(fd, F_GETFD) >= 0, "fd must still be open after release()")
            #expect(close(fd) == 0)
        }

        @Test("binding to a missing interface names it in the error")
        func bindError() throws {
            #expect {
                _ = try PacketSocket(interfaceIndex: 999_999, interfaceName: "ghost0", options: .init())
            } throws: { error in
                "\(error)" == "bind(AF_PACKET) on 'ghost0': No such device (ENODEV)"
            }
        }
    }
}
