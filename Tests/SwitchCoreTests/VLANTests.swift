import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("VLANs")
struct VLANTests {
    /// Bytes 12..<16 of a frame: the TPID and TCI when tagged.
    func tag(_ f: [UInt8]) -> (tpid: UInt16, vid: UInt16)? {
        guard f.count >= 18, f[12] == 0x81, f[13] == 0x00 else { return nil }
        return (0x8100, UInt16(f[14] & 0x0F) << 8 | UInt16(f[15]))
    }

    @Test("Access ports: same VLAN reaches, different VLAN does not (broadcast and learned unicast)")
    func accessIsolation() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let c = try es.addPort("c", mac: mac(3), properties: [.vlan(.access(20))])
        es.learn(c, mac(3))
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b) == [frame(.broadcast, mac(1))])
        #expect(es.take(c).isEmpty)
        es.send(from: a, frame(mac(3), mac(1)))  // c's MAC is known, but in VLAN 20
        #expect(es.take(c).isEmpty)
        #expect(es.take(b).count == 1)  // unknown in VLAN 10: flooded within it
        es.send(from: c, frame(.broadcast, mac(3)))
        #expect(es.take(a).isEmpty && es.take(b).isEmpty)
    }

    @Test("A tagged frame into an access port is dropped; a priority tag (VID 0) is accepted and stripped")
    func taggedIntoAccess() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        es.send(from: a, frame(.broadcast, mac(1), vlan: 10))
        #expect(es.take(b).isEmpty)
        #expect(es.dropCount(a, .ingress, .vlanNotAllowed) == 1)
        es.send(from: a, frame(.broadcast, mac(1), vlan: 0))
        #expect(es.take(b) == [frame(.broadcast, mac(1))])
    }

    @Test("Trunk receives tagged, access receives untagged; trunk ingress honours its allowed set and native VLAN")
    func trunk() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let c = try es.addPort("c", mac: mac(3), properties: [.vlan(.access(20))])
        let t = try es.addPort("t", mac: mac(4), properties: [.vlan(.trunk(allowed: [10, 20], native: nil))])
        let n = try es.addPort("n", mac: mac(5), properties: [.vlan(.trunk(allowed: [20], native: 10))])

        let untagged = frame(.broadcast, mac(1))
        es.send(from: a, untagged)
        #expect(es.take(b) == [untagged])
        let onTrunk = try #require(es.take(t).first)
        #expect(tag(onTrunk)?.vid == 10)
        #expect(onTrunk.count == untagged.count + 4)
        #expect(Array(onTrunk[0..<12]) == Array(untagged[0..<12]))
        #expect(Array(onTrunk[16...]) == Array(untagged[12...]))
        #expect(es.take(n) == [untagged], "native VLAN goes untagged")
        #expect(es.take(c).isEmpty)

        es.send(from: t, frame(.broadcast, mac(4), vlan: 20))
        #expect(es.take(c) == [frame(.broadcast, mac(4))])
        #expect(es.take(a).isEmpty && es.take(b).isEmpty)
        #expect(tag(try #require(es.take(n).first))?.vid == 20)

        es.send(from: t, frame(.broadcast, mac(4), vlan: 30))  // not allowed
        es.send(from: t, frame(.broadcast, mac(4)))            // untagged, no native VLAN
        #expect(es.dropCount(t, .ingress, .vlanNotAllowed) == 2)
        #expect(es.take(a).isEmpty && es.take(c).isEmpty && es.take(n).isEmpty)

        es.send(from: n, frame(.broadcast, mac(5)))  // untagged on n = native VLAN 10
        #expect(es.take(a) == [frame(.broadcast, mac(5))])
        #expect(tag(try #require(es.take(t).first))?.vid == 10)
    }

    @Test("Priority bits survive trunk to trunk")
    func priorityKept() throws {
        let es = EmbeddedSwitch()
        let t1 = try es.addPort("t1", mac: mac(1), properties: [.vlan(.trunk(allowed: [10], native: nil))])
        let t2 = try es.addPort("t2", mac: mac(2), properties: [.vlan(.trunk(allowed: [10], native: nil))])
        var f = frame(.broadcast, mac(1), vlan: 10)
        f[14] |= 0xA0  // PCP 5
        es.send(from: t1, f)
        #expect(es.take(t2) == [f])
    }

    @Test("VLAN-transparent ports pass tags intact")
    func transparent() throws {
        let es = EmbeddedSwitch()
        let p = try es.addPort("p", mac: mac(1))
        let q = try es.addPort("q", mac: mac(2))
        let tagged = frame(.broadcast, mac(1), vlan: 5)
        let plain = frame(.broadcast, mac(1))
        es.send(from: p, [tagged, plain])
        #expect(es.take(q) == [tagged, plain])
        // Learning is per VLAN: q's MAC learned untagged is unknown in VLAN 5.
        es.learn(q, mac(2))
        let r = try es.addPort("r", mac: mac(3))
        es.send(from: p, frame(mac(2), mac(1), vlan: 5))
        #expect(es.take(r).count == 1)
    }

    @Test("Changing or deleting the VLAN property takes effect at once")
    func propertyChange() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(20))])
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
        try es.sw.updateProperty(.vlan(.access(20)), on: a)
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).count == 1)
        try es.sw.deleteProperty(.vlan, from: a)  // a transparent: its untagged frames are VLAN 0
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
    }

    @Test("Tag push onto a trunk shifts the virtio-net header's offsets by 4; an access port gets them unchanged")
    func virtioHeaderShift() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [10], native: nil))])
        let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                     headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        es.send(from: a, TestFrame.ipv4(dst: .broadcast, src: mac(1)), vnetHeader: header)
        let onTrunk = try #require(es.takeWithHeaders(t).first)
        #expect(tag(onTrunk.bytes)?.vid == 10)
        #expect(onTrunk.header?.checksumStart == 38)
        #expect(onTrunk.header?.headerLength == 58)
        #expect(onTrunk.header?.checksumOffset == 16)
        #expect(onTrunk.header?.gsoSize == 1448)
        let onAccess = try #require(es.takeWithHeaders(b).first)
        #expect(onAccess.header == header)
        #expect(tag(onAccess.bytes) == nil)

        // And back: tagged on a trunk with a header, popped for an access port.
        var shifted = header
        shifted.checksumStart = 38
        shifted.headerLength = 58
        es.send(from: t, TestFrame.ipv4(dst: .broadcast, src: mac(3), vlan: 10), vnetHeader: shifted)
        #expect(es.takeWithHeaders(a).first?.header == header)
    }

    @Test("A header without NEEDS_CSUM or GSO is left alone")
    func virtioHeaderNoOffsets() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [10], native: nil))])
        let header = VirtioNetHeader(checksumStart: 34, checksumOffset: 16)
        es.send(from: a, TestFrame.ipv4(dst: .broadcast, src: mac(1)), vnetHeader: header)
        #expect(es.takeWithHeaders(t).first?.header == header)
    }
}
