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

    /// `frame` with an 802.1ad outer tag (TPID 0x88A8) instead of 802.1Q.
    func serviceTagged(_ f: [UInt8]) -> [UInt8] {
        var g = f
        g[12] = 0x88; g[13] = 0xA8
        return g
    }

    /// An untagged frame wrapped in two 802.1Q tags, outer first.
    func doubleTagged(_ dst: MACAddress, _ src: MACAddress, outer: UInt16, inner: UInt16) -> [UInt8] {
        let f = frame(dst, src, vlan: inner)
        return Array(f[0..<12]) + [0x81, 0x00, UInt8(outer >> 8), UInt8(outer & 0xFF)] + Array(f[12...])
    }

    @Test("A port without a VLAN setting carries untagged frames only: tagged ones are dropped with a reason")
    func untaggedByDefault() throws {
        let es = EmbeddedSwitch()
        let p = try es.addPort("p", mac: mac(1))
        let q = try es.addPort("q", mac: mac(2))
        let plain = frame(.broadcast, mac(1))
        es.send(from: p, [frame(.broadcast, mac(1), vlan: 5), plain, frame(.broadcast, mac(1), vlan: 0)])
        #expect(es.take(q) == [plain, plain], "untagged and priority-tagged (VID 0, tag removed) pass; VLAN 5 does not")
        #expect(es.dropCount(p, .ingress, .vlanNotAllowed) == 1)
        // The same with the explicit setting.
        try es.sw.addProperty(.vlan(.untagged), to: p)
        es.send(from: p, [frame(.broadcast, mac(1), vlan: 5), plain])
        #expect(es.take(q) == [plain])
        #expect(es.dropCount(p, .ingress, .vlanNotAllowed) == 2)
    }

    @Test("VLAN hop from an untagged VM: tagged broadcast and unicast reach nothing on VLAN 10, and VLAN 10 never reaches it")
    func vlanHopFromUntagged() throws {
        let es = EmbeddedSwitch()
        let attacker = try es.addPort("attacker", mac: mac(1))
        let victim = try es.addPort("victim", mac: mac(2), properties: [.vlan(.access(10))])
        let peer = try es.addPort("peer", mac: mac(3), properties: [.vlan(.access(10))])
        es.learn(victim, mac(2))
        for _ in 0..<30 {
            es.send(from: attacker, [frame(.broadcast, mac(1), vlan: 10), frame(mac(2), mac(1), vlan: 10),
                                     doubleTagged(mac(2), mac(1), outer: 0, inner: 10), doubleTagged(.broadcast, mac(1), outer: 10, inner: 10)])
        }
        #expect(es.take(victim).isEmpty)
        #expect(es.dropCount(attacker, .ingress, .vlanNotAllowed) == 60)
        #expect(es.dropCount(attacker, .ingress, .qinqNotAllowed) == 60)
        // Positive control: the victim does get VLAN 10 traffic, and VLAN 10 stays off the untagged VM.
        es.send(from: peer, frame(.broadcast, mac(3)))
        #expect(es.take(victim) == [frame(.broadcast, mac(3))])
        #expect(es.take(attacker).isEmpty)
    }

    @Test("QinQ: 802.1ad or stacked 802.1Q tags are dropped from access, untagged and trunk VM ports; the uplink classifies by the outer tag")
    func qinq() throws {
        let es = EmbeddedSwitch()
        let access = try es.addPort("access", mac: mac(1), properties: [.vlan(.access(10))])
        let plain = try es.addPort("plain", mac: mac(2))
        let trunk = try es.addPort("trunk", mac: mac(3), properties: [.vlan(.trunk(allowed: [10, 20], native: nil))])
        let uplink = try es.addPort("uplink", mac: mac(4), type: .external)
        let v10 = try es.addPort("v10", mac: mac(5), properties: [.vlan(.access(10))])
        es.send(from: access, [serviceTagged(frame(.broadcast, mac(1), vlan: 10)), doubleTagged(.broadcast, mac(1), outer: 0, inner: 20)])
        es.send(from: plain, [serviceTagged(frame(.broadcast, mac(2), vlan: 0)), doubleTagged(.broadcast, mac(2), outer: 0, inner: 10)])
        es.send(from: trunk, [serviceTagged(frame(.broadcast, mac(3), vlan: 10)), doubleTagged(.broadcast, mac(3), outer: 10, inner: 20)])
        for p in [access, plain, trunk] { #expect(es.dropCount(p, .ingress, .qinqNotAllowed) == 2) }
        #expect(es.take(v10).isEmpty && es.take(uplink).isEmpty)
        // From the uplink: 802.1ad is refused, stacked 802.1Q goes by its outer tag (popped for the access port).
        es.send(from: uplink, [serviceTagged(frame(.broadcast, mac(4), vlan: 10)), doubleTagged(.broadcast, mac(4), outer: 10, inner: 99)])
        #expect(es.dropCount(uplink, .ingress, .qinqNotAllowed) == 1)
        #expect(es.take(v10) == [frame(.broadcast, mac(4), vlan: 99)])
        #expect(es.take(plain).isEmpty)
    }

    @Test("The external port defaults to a trunk of every VLAN with untagged frames in the untagged domain")
    func externalDefault() throws {
        let es = EmbeddedSwitch()
        let uplink = try es.addPort("uplink", mac: mac(9), type: .external)
        let plain = try es.addPort("plain", mac: mac(1))
        let v10 = try es.addPort("v10", mac: mac(2), properties: [.vlan(.access(10))])
        let v20 = try es.addPort("v20", mac: mac(3), properties: [.vlan(.access(20))])
        es.send(from: plain, frame(.broadcast, mac(1)))
        #expect(es.take(uplink) == [frame(.broadcast, mac(1))])
        es.send(from: v10, frame(.broadcast, mac(2)))
        #expect(tag(try #require(es.take(uplink).first))?.vid == 10)
        #expect(es.take(plain).isEmpty && es.take(v20).isEmpty)
        es.send(from: uplink, [frame(.broadcast, mac(9), vlan: 10), frame(.broadcast, mac(9), vlan: 20), frame(.broadcast, mac(9)),
                               frame(.broadcast, mac(9), vlan: 30)])
        #expect(es.take(v10) == [frame(.broadcast, mac(9))])
        #expect(es.take(v20) == [frame(.broadcast, mac(9))])
        #expect(es.take(plain) == [frame(.broadcast, mac(9))])
        // Learning is per VLAN: v10's MAC learned in VLAN 10 is unknown untagged, so that is flooded.
        es.learn(v10, mac(2))
        es.send(from: uplink, frame(mac(2), mac(9)))
        #expect(es.take(plain).count == 1 && es.take(v10).isEmpty)
        #expect(es.sw.properties(of: uplink).isEmpty, "the default is not a property")
    }

    @Test("A forwarding extension cannot deliver across VLANs: the destination is refused and counted")
    func forwardingExtensionVLANs() throws {
        let es = EmbeddedSwitch()
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(20))])
        let c = try es.addPort("c", mac: mac(3), properties: [.vlan(.access(10))])
        var added: [Bool] = []
        fwd.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                added.append(ctx.addDestination(i, port: b))
                added.append(ctx.addDestination(i, port: c))
            }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(added == [false, true])
        #expect(es.take(b).isEmpty)
        #expect(es.take(c) == [frame(.broadcast, mac(1))])
        #expect(es.dropCount(b, .egress, .vlanNotAllowed) == 1)
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
        try es.sw.deleteProperty(.vlan, from: a)  // back to the default: untagged, VLAN 0
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
