import FakeVM
import Testing

@Suite("TestFrames builders")
struct TestFramesTests {
    @Test("MAC parse/format round trip and rejection")
    func macs() {
        #expect(TestFrames.parseMAC("02:00:0a:FF:00:01") == [0x02, 0x00, 0x0a, 0xff, 0x00, 0x01])
        #expect(TestFrames.parseMAC("02-00-0a-ff-00-01") == [0x02, 0x00, 0x0a, 0xff, 0x00, 0x01])
        #expect(TestFrames.formatMAC([0x02, 0x00, 0x0a, 0xff, 0x00, 0x01]) == "02:00:0a:ff:00:01")
        for bad in ["", "02:00:0a:ff:00", "02:00:0a:ff:00:01:02", "2:00:0a:ff:00:01", "zz:00:0a:ff:00:01"] {
            #expect(TestFrames.parseMAC(bad) == nil, "\(bad)")
        }
    }

    @Test("ethernet frames: layout, VLAN tag, padding to 60 bytes")
    func frames() {
        let plain = TestFrames.ethernet(dst: TestFrames.mac(2), src: TestFrames.mac(1), etherType: 0x0800, payload: [1, 2, 3])
        #expect(plain.count == 60)
        #expect(Array(plain[0..<6]) == TestFrames.mac(2))
        #expect(Array(plain[6..<12]) == TestFrames.mac(1))
        #expect(Array(plain[12..<17]) == [0x08, 0x00, 1, 2, 3])
        let tagged = TestFrames.broadcast(src: TestFrames.mac(1), vlan: 0x2064, payload: Array(repeating: 7, count: 100))
        #expect(tagged.count == 118)
        #expect(Array(tagged[0..<6]) == TestFrames.broadcastMAC)
        #expect(Array(tagged[12..<18]) == [0x81, 0x00, 0x20, 0x64, 0x88, 0xb5])
    }
}
