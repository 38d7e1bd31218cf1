import FakeVM
import LinuxNet
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

extension Privileged {
    @Suite("GSO superframes through PACKET_VNET_HDR")
    struct GSOTests {
        init() throws { try Privilege.requireNetAdmin() }

        @Test("a 20 KB TSO segment crosses from one TAP to another whole, header included")
        func tsoAcrossTwoTaps() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let tapA = try makeTap("gsoa", cleanup: cleanup)
            let tapB = try makeTap("gsob", cleanup: cleanup)
            let vmA = try FakeVM(tap: tapA.name, vnetHeader: true)
            let vmB = try FakeVM(tap: tapB.name, vnetHeader: true)
            defer {
                vmA.close()
                vmB.close()
            }
            // As QEMU does once the guest driver accepts offloads: B's reader takes superframes as they are.
            try TapDevice.setOffload(fd: vmB.fileDescriptor, csum: true, tso4: true, tso6: true)

            let options = PacketSocket.Options(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true)
            let portA = try Receiver(tapA, options: options)
            let portB = try Receiver(tapB, options: options)

            let frame = tcpFrame(dst: TestFrames.mac(2), src: TestFrames.mac(1), payloadLength: 20_000)
            let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                         headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
            try vmA.send(vnetHeader: header.bytes, frame: frame)

            let got = try portA.receive(timeout: .seconds(2))
            try #require(got.count == 1)
            #expect(got[0].bytes.count == 10 + frame.count, "the superframe must arrive whole")
            let receivedHeader = VirtioNetHeader(got[0].bytes)
            #expect(receivedHeader.gsoType == VirtioNetHeader.gsoTCPv4, "\(receivedHeader)")
            #expect(receivedHeader.gsoSize == 1448)
            #expect(receivedHeader.flags & VirtioNetHeader.needsChecksum != 0)
            #expect(receivedHeader.checksumStart == 34 && receivedHeader.checksumOffset == 16)
            #expect(Array(got[0].bytes.dropFirst(10)) == frame)

            // Forward it as the switch would: header and frame exactly as received.
            #expect(sendBatch([Array(got[0].bytes.dropFirst(10))], header: Array(got[0].bytes.prefix(10)), to: portB.fd) == .sent(1))
            let delivered = try #require(try vmB.receiveWithHeader(timeout: .seconds(2)))
            #expect(delivered.frame == frame, "VM B must get the superframe unsegmented (\(delivered.frame.count) bytes)")
            let deliveredHeader = VirtioNetHeader(delivered.header)
            #expect(deliveredHeader.gsoType == VirtioNetHeader.gsoTCPv4, "\(deliveredHeader)")
            #expect(deliveredHeader.gsoSize == 1448)
            #expect(deliveredHeader.flags & VirtioNetHeader.needsChecksum != 0)
            #expect(deliveredHeader.checksumStart == 34 && deliveredHeader.checksumOffset == 16)
        }

        @Test("without TUNSETOFFLOAD on the receiving VM: bypass drops the superframe (ENOBUFS), the qdisc path segments it")
        func withoutOffload() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let tapB = try makeTap("gsoc", cleanup: cleanup)
            let vmB = try FakeVM(tap: tapB.name, vnetHeader: true)
            defer { vmB.close() }
            let bypass = try Receiver(tapB, options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true))
            let qdisc = try Receiver(tapB, options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: false))
            let frame = tcpFrame(dst: TestFrames.mac(2), src: TestFrames.mac(1), payloadLength: 20_000)
            let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                         headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)

            // packet_direct_xmit drops any skb that validate_xmit_skb had to change (software GSO here).
            #expect(sendBatch([frame], header: header.bytes, to: bypass.fd) == .failed(sent: 0, errno: ENOBUFS))
            #expect(try vmB.receive(timeout: .milliseconds(50)) == nil)

            try waitForOperUp(tapB.name)
            #expect(sendBatch([frame], header: header.bytes, to: qdisc.fd) == .sent(1))
            var segments: [[UInt8]] = []
            while let segment = try vmB.receive(timeout: .milliseconds(500)) {
                segments.append(segment)
                if segments.count > 20 { break }
            }
            #expect(segments.count == (20_000 + 1447) / 1448, "got \(segments.count) segments")
            #expect(segments.allSatisfy { $0.count <= 14 + 20 + 20 + 1448 })
            #expect(segments.reduce(0) { $0 + $1.count - 54 } == 20_000)
        }
    }
}
