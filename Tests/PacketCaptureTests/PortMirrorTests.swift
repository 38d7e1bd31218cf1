import EmbeddedSwitch
import PacketCapture
import SwitchCore
import Testing

/// A fast path that accepts every entry (only the switch's per-port answer is looked at here).
private final class AcceptingDatapath: OffloadDatapath {
    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool { true }
    func remove(_ flow: OffloadFlow) {}
    func lastUse(_ flow: OffloadFlow) -> UInt64? { 0 }
    func counters(portIndex: Int) -> FastPathCounters { FastPathCounters() }
}

@Suite("Port mirroring")
struct PortMirrorTests {
    /// a, b, c VM ports that know each other; a mirror extension enabled with `mirrors`.
    func setUp(_ mirrors: [MirrorDefinition], properties: [PortProperty] = [])
        throws -> (EmbeddedSwitch, PortMirrorExtension, PortID, PortID, PortID) {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: properties)
        let b = try es.addPort("b", mac: mac(2), properties: properties)
        let c = try es.addPort("c", mac: mac(3), properties: properties)
        // Learn every address (b and c answer a broadcast each).
        es.send(from: a, frame(.broadcast, mac(1)))
        es.send(from: b, frame(mac(1), mac(2)))
        es.send(from: c, frame(mac(1), mac(3)))
        let ext = PortMirrorExtension()
        try es.sw.enable(ext, position: 0)
        ext.set(mirrors, on: es.sw)
        es.clearRecords()
        return (es, ext, a, b, c)
    }

    func mirror(_ direction: String, vlan: VLANID? = nil, sources: [String] = ["a"], to: String = "c") -> MirrorDefinition {
        MirrorDefinition(name: "m1", sources: sources, inbound: direction != "out", outbound: direction != "in", vlan: vlan, destination: to)
    }

    @Test("Both directions: the destination gets a copy of each frame as on the source's wire; the frames themselves still arrive")
    func bothDirections() throws {
        let (es, ext, a, b, c) = try setUp([mirror("both")])
        let ab = frame(mac(2), mac(1), tag: 1), ba = frame(mac(1), mac(2), tag: 2)
        es.send(from: a, ab)
        es.send(from: b, ba)
        #expect(es.take(b) == [ab])
        #expect(es.take(a) == [ba])
        #expect(es.take(c) == [ab, ba])
        let s = try #require(ext.statuses.first)
        #expect(s.active && s.frames == 2 && s.bytes == UInt64(ab.count + ba.count) && s.drops == 0)
        // Copies are not the ports' traffic: c received only a's broadcast as far as its counters go.
        #expect(es.sw.counters(of: c)?.framesOut == 1)
        #expect(es.sw.counters(of: b)?.framesOut == 2)
    }

    @Test("in mirrors only what the source sends, out only what it receives")
    func oneDirection() throws {
        for (direction, expectAB, expectBA) in [("in", true, false), ("out", false, true)] {
            let (es, ext, a, b, c) = try setUp([mirror(direction)])
            let ab = frame(mac(2), mac(1), tag: 1), ba = frame(mac(1), mac(2), tag: 2)
            es.send(from: a, ab)
            es.send(from: b, ba)
            #expect(es.take(c) == (expectAB ? [ab] : []) + (expectBA ? [ba] : []), "\(direction)")
            #expect(ext.statuses.first?.frames == 1)
            // Positive control: the traffic itself flowed.
            #expect(es.take(b) == [ab] && es.take(a) == [ba])
        }
    }

    @Test("A frame between two sources of one mirror is copied once")
    func copiedOnce() throws {
        let (es, ext, a, b, c) = try setUp([mirror("both", sources: ["a", "b"])])
        let ab = frame(mac(2), mac(1), tag: 1)
        es.send(from: a, [ab, ab, ab])
        #expect(es.take(b).count == 3)
        #expect(es.take(c) == [ab, ab, ab])
        #expect(ext.statuses.first?.frames == 3)
    }

    @Test("--vlan selects only frames in that VLAN; copies keep their tag as on the wire")
    func vlanSelection() throws {
        let trunk: [PortProperty] = [.vlan(.trunk(allowed: [10, 20], native: nil))]
        let (es, ext, a, b, c) = try setUp([mirror("both", vlan: 10)], properties: trunk)
        // Learn in both VLANs.
        for v: UInt16 in [10, 20] {
            es.send(from: b, frame(.broadcast, mac(2), vlan: v))
            es.send(from: a, frame(.broadcast, mac(1), vlan: v))
        }
        es.clearRecords()
        let before = ext.statuses.first?.frames ?? 0
        let in10 = frame(mac(2), mac(1), tag: 1, vlan: 10), in20 = frame(mac(2), mac(1), tag: 2, vlan: 20)
        es.send(from: a, [in10, in20])
        #expect(es.take(b) == [in10, in20])
        #expect(es.take(c) == [in10])
        #expect(ext.statuses.first?.frames == before + 1)
    }

    @Test("An access port's VLAN selects its untagged frames")
    func accessVLAN() throws {
        let (es, _, a, b, c) = try setUp([mirror("in", vlan: 10)], properties: [.vlan(.access(10))])
        let ab = frame(mac(2), mac(1))
        es.send(from: a, ab)
        #expect(es.take(b) == [ab])
        #expect(es.take(c) == [ab])
        let (es2, ext2, a2, b2, c2) = try setUp([mirror("in", vlan: 11)], properties: [.vlan(.access(10))])
        es2.send(from: a2, ab)
        #expect(es2.take(b2) == [ab])
        #expect(es2.take(c2).isEmpty)
        #expect(ext2.statuses.first?.frames == 0)
    }

    @Test("Copies go only into the room the destination has left: normal frames first, copies dropped and counted as mirror drops")
    func capacity() throws {
        let (es, ext, a, b, c) = try setUp([mirror("in")])
        es.transmitLimit[c] = 4
        // a sends 3 frames to b and 2 to c: c's normal frames (2) go first, then 2 of the 3 copies...
        let toB = frame(mac(2), mac(1), tag: 1), toC = frame(mac(3), mac(1), tag: 2)
        es.send(from: a, [toB, toC, toB, toC, toB])
        #expect(es.take(b).count == 3)
        let atC = es.take(c)
        #expect(atC.count == 4)
        #expect(Array(atC.prefix(2)) == [toC, toC])
        var s = try #require(ext.statuses.first)
        #expect(s.frames == 2 && s.drops == 3)
        // ...and nothing counts as the ports' drops.
        for p in [a, b, c] { #expect(es.sw.counters(of: p)?.drops.isEmpty == true) }
        // A destination whose normal frames already filled its queue gets no copies at all.
        es.transmitLimit[c] = 1
        es.send(from: a, [toC, toC, toB])
        #expect(es.take(c) == [toC])
        #expect(es.take(b) == [toB])
        s = try #require(ext.statuses.first)
        #expect(s.frames == 2 && s.drops == 6)
        #expect(es.sw.counters(of: c)?.drops.values.reduce(0, +) == 1)
    }

    @Test("More copies than a mirror holds per batch (two batches' worth) are counted as its drops")
    func copyBatchFull() throws {
        let (es, ext, a, b, c) = try setUp([mirror("out", sources: ["a", "b", "e"])])
        let d = try es.addPort("d", mac: mac(4))
        let e = try es.addPort("e", mac: mac(5))
        // 32 broadcasts from d reach a, b, c and e: 96 copies for a mirror that holds 64 per batch.
        es.send(from: d, Array(repeating: frame(.broadcast, mac(4)), count: 32))
        for p in [a, b, e] { #expect(es.take(p).count == 32) }
        #expect(es.take(c).count == 32 + 64)
        let s = try #require(ext.statuses.first)
        #expect(s.frames == 64 && s.drops == 32)
    }

    @Test("A mirror is inactive while its destination is gone and resumes when a port of that name is back")
    func portsComeAndGo() throws {
        let (es, ext, a, b, c) = try setUp([mirror("in")])
        #expect(try es.sw.removePort(c))
        #expect(ext.statuses.first?.active == false)
        #expect(ext.statuses.first?.missingPorts == ["c"])
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).count == 1)
        #expect(ext.statuses.first?.frames == 0 && ext.statuses.first?.drops == 0)
        let c2 = try es.addPort("c", mac: mac(3))
        #expect(ext.statuses.first?.active == true)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).count == 1)
        #expect(es.take(c2).count == 1)
        #expect(ext.statuses.first?.frames == 1)
    }

    @Test("A mirrored source is off the fast path while the mirror exists, and back after")
    func offload() throws {
        let (es, ext, a, b, _) = try setUp([])
        es.sw.setOffloadDatapath(AcceptingDatapath())
        for p in [a, b] { es.sw.setOffloadSupport(p, unsupportedReason: nil) }
        #expect(es.sw.offloadStatus(of: a) == .allowed)
        ext.set([mirror("both")], on: es.sw)
        #expect(es.sw.offloadStatus(of: a) == .mustSeeEveryFrame(reason: "port-mirror: mirrored by m1"))
        #expect(es.sw.offloadStatus(of: b) == .allowed)
        ext.set([], on: es.sw)
        #expect(es.sw.offloadStatus(of: a) == .allowed)
    }

    @Test("Counters of an unchanged mirror carry on when the set changes")
    func countersKept() throws {
        let (es, ext, a, _, _) = try setUp([mirror("in")])
        es.send(from: a, frame(mac(2), mac(1)))
        let other = MirrorDefinition(name: "m2", sources: ["b"], inbound: true, outbound: true, vlan: nil, destination: "c")
        ext.set([mirror("in"), other], on: es.sw)
        #expect(ext.statuses.map(\.frames) == [1, 0])
    }
}
