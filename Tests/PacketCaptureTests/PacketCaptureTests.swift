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
}
