import EmbeddedSwitch
import PacketCapture
import Pcapng
import SwitchCore
import Testing

func mac(_ n: UInt8) -> MACAddress { MACAddress(0x02, 0, 0, 0, 0, n) }

func frame(_ dst: MACAddress, _ src: MACAddress, tag: UInt8 = 0xAB, vlan: UInt16? = nil) -> [UInt8] {
    TestFrame.ethernet(dst: dst, src: src, vlan: vlan, payload: Array(repeating: tag, count: 46))
}

@Suite("Capture ring")
struct CaptureRingTests {
    @Test("Frames come out in order with their interface, length and comment, also across the wrap")
    func roundTrip() {
        let ring = CaptureRing(bytes: 65_536, interfaces: 2)
        var expected: [[UInt8]] = []
        var got: [[UInt8]] = []
        for round in 0..<50 {
            for k in 0..<20 {
                let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: round * 20 + k), count: 60 + (k * 37) % 1400)
                let ok = bytes.withUnsafeBytes { ring.write(interface: k % 2, timestamp: UInt64(round), data: $0, snaplen: 1000) }
                #expect(ok)
                expected.append(Array(bytes.prefix(1000)))
            }
            ring.drain { r in
                got.append(Array(r.data))
                #expect(r.originalLength >= r.data.count)
                return true
            }
        }
        #expect(got == expected)
        #expect(ring.lost(0) == 0 && ring.lost(1) == 0)
        #expect(ring.seen(0) + ring.seen(1) == 1000)
    }

    @Test("A full ring loses new frames and counts them; draining makes room again")
    func fullRingLoses() {
        let ring = CaptureRing(bytes: 65_536, interfaces: 1)
        let bytes = [UInt8](repeating: 7, count: 1000)
        var written = 0
        for _ in 0..<200 where bytes.withUnsafeBytes({ ring.write(interface: 0, timestamp: 1, data: $0, snaplen: 2000) }) { written += 1 }
        #expect(written > 0 && written < 200)
        #expect(ring.lost(0) == UInt64(200 - written))
        #expect(ring.drain { _ in true } == written)
        #expect(bytes.withUnsafeBytes { ring.write(interface: 0, timestamp: 1, data: $0, snaplen: 2000) })
    }
}

@Suite("Capture extension")
struct CaptureExtensionTests {
    func session(_ es: EmbeddedSwitch, _ ports: [(PortID, String)], drops: Bool = false) -> CaptureSession {
        var interfaces: [CaptureSession.Interface] = []
        for (id, name) in ports {
            interfaces.append(.init(port: id, portName: name, direction: .inbound))
            interfaces.append(.init(port: id, portName: name, direction: .outbound))
        }
        return CaptureSession(interfaces: interfaces, snaplen: 65_535, includeDrops: drops, ringBytes: 1 << 20)
    }

    func packets(_ s: CaptureSession) throws -> [Pcapng.Packet] {
        var out = s.header(application: "test")
        _ = s.drain(into: &out)
        out += s.trailer()
        let blocks = try Pcapng.read(out)
        #expect(blocks.first?.type == Pcapng.Block.sectionHeader)
        #expect(blocks.compactMap(\.interfaceName) == s.interfaces.map(\.name))
        return blocks.compactMap(\.packet)
    }

    @Test("Both directions of a port, in order, as pcapng; other ports are not recorded")
    func bothDirections() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        let ext = CaptureExtension()
        try es.sw.enable(ext)
        let s = session(es, [(a, "a")])
        ext.add(s, on: es.sw)
        es.send(from: a, frame(.broadcast, mac(1), tag: 1))
        es.send(from: b, frame(mac(1), mac(2), tag: 2))
        es.send(from: c, frame(mac(2), mac(3), tag: 3))  // not a's
        let p = try packets(s)
        #expect(p.map(\.data) == [frame(.broadcast, mac(1), tag: 1), frame(mac(1), mac(2), tag: 2)])
        #expect(p.map(\.interface) == [0, 1])
        #expect(p.map(\.direction) == [.inbound, .outbound])
        #expect(p[0].timestamp <= p[1].timestamp && p[0].timestamp > 1_700_000_000_000_000_000)
    }

    @Test("--drops: a VLAN-hop frame is recorded with its reason; without it, not")
    func drops() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        _ = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let ext = CaptureExtension()
        try es.sw.enable(ext)
        let with = session(es, [(a, "a")], drops: true)
        let without = session(es, [(a, "a")], drops: false)
        ext.add(with, on: es.sw)
        ext.add(without, on: es.sw)
        es.send(from: a, [frame(.broadcast, mac(1), vlan: 20), frame(.broadcast, mac(1), tag: 5)])
        let p = try packets(with)
        #expect(p.count == 2)
        #expect(p[0].dropped && p[0].comment == "dropped: VLAN not allowed on port, by switch" && p[0].interface == 0)
        #expect(!p[1].dropped && p[1].comment == nil)
        #expect(try packets(without).count == 1)  // positive control: the good frame
    }

    @Test("Deleting every captured port ends the session")
    func portGone() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let ext = CaptureExtension()
        try es.sw.enable(ext)
        let s = session(es, [(a, "a")])
        ext.add(s, on: es.sw)
        #expect(!s.isOver)
        _ = try es.sw.removePort(a)
        #expect(s.isOver)
    }

    @Test("Only the captured ports leave the fast path: B <-> C keep their entries while A is captured; A's come back after")
    func offloadPerPort() throws {
        let es = EmbeddedSwitch()
        let dp = MemoryDatapath()
        es.sw.setOffloadDatapath(dp)
        let ports = try (1...3).map { try es.addPort("p\($0)", mac: mac(UInt8($0))) }
        let (a, b, c) = (ports[0], ports[1], ports[2])
        for (p, m) in zip(ports, 1...3) {
            es.sw.setOffloadSupport(p, unsupportedReason: nil)
            es.send(from: p, frame(.broadcast, mac(UInt8(m))))  // learned
        }
        for p in ports { _ = es.take(p) }
        func flow(_ from: PortID, _ to: PortID, _ f: UInt8, _ t: UInt8) { es.send(from: from, frame(mac(t), mac(f))) }
        flow(a, b, 1, 2); flow(b, c, 2, 3); flow(c, b, 3, 2)
        #expect(dp.entries.count == 3)

        // Enabling the capture extension changes no decision: nothing leaves the fast path yet.
        let ext = CaptureExtension()
        try es.sw.enable(ext, position: 0)
        #expect(dp.entries.count == 3)
        let s = session(es, [(a, "p1")])
        ext.add(s, on: es.sw)
        #expect(Set(dp.entries.keys.map(\.ingress)) == [b, c], "only a's entry is gone")
        #expect(es.sw.offloadStatus(of: a) == .mustSeeEveryFrame(reason: "packet-capture: capture running"))
        #expect(es.sw.offloadStatus(of: b) == .allowed && es.sw.offloadStatus(of: c) == .allowed)
        _ = es.take(b)
        flow(a, b, 1, 2); flow(b, a, 2, 1)
        #expect(es.take(b).count == 1 && es.take(a).count == 1, "a's frames are still delivered")
        #expect(dp.entries.count == 2, "no entry from or to a while it is captured")
        #expect(try packets(s).count == 2)

        // The capture ends (another keeps the extension enabled): a is offloaded again.
        let other = session(es, [(c, "p3")])
        ext.add(other, on: es.sw)
        #expect(dp.entries.isEmpty, "c captured: its entry is gone, and b's to c")
        #expect(ext.remove(s, on: es.sw) == 1)
        #expect(es.sw.offloadStatus(of: a) == .allowed)
        flow(a, b, 1, 2)
        #expect(dp.entries.keys.contains { $0.ingress == a })
        #expect(ext.remove(other, on: es.sw) == 0)
        try es.sw.disable(ext.name)
        #expect(dp.entries.count == 1, "disabling the capture extension keeps the entries")
        flow(c, b, 3, 2)
        #expect(dp.entries.count == 2)
    }
}

/// A fast path in memory: the entries the switch installed.
final class MemoryDatapath: OffloadDatapath {
    var entries: [OffloadFlow: OffloadTarget] = [:]
    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool {
        entries[flow] = target
        return true
    }
    func remove(_ flow: OffloadFlow) { entries[flow] = nil }
    func lastUse(_ flow: OffloadFlow) -> UInt64? { entries[flow] == nil ? nil : 0 }
    func counters(portIndex: Int) -> FastPathCounters { FastPathCounters() }
}
