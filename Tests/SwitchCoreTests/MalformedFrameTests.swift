import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Malformed frames")
struct MalformedFrameTests {
    static let src = mac(1)

    /// Ethernet header to broadcast from `src` with `type`, then `rest`.
    static func eth(_ type: UInt16, _ rest: [UInt8]) -> [UInt8] {
        MACAddress.broadcast.bytes + src.bytes + [UInt8(type >> 8), UInt8(type & 0xFF)] + rest
    }

    static func ipv4Header(version: UInt8 = 4, ihl: UInt8 = 5, total: Int) -> [UInt8] {
        [version << 4 | ihl, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
    }

    static let cases: [(String, [UInt8], DropReason)] = [
        ("empty", [], .runtFrame),
        ("runt", Array(repeating: 0xFF, count: 13), .runtFrame),
        ("truncated 802.1Q", MACAddress.broadcast.bytes + src.bytes + [0x81, 0x00, 0x00], .truncatedVLANHeader),
        ("truncated 802.1ad", MACAddress.broadcast.bytes + src.bytes + [0x88, 0xA8, 0x00, 0x05], .truncatedVLANHeader),
        ("multicast source", MACAddress.broadcast.bytes + [0x01, 0, 0x5E, 0, 0, 1] + [0x88, 0xB5] + Array(repeating: 0, count: 46),
         .multicastSourceMAC),
        ("truncated IPv4", eth(0x0800, Array(repeating: 0x45, count: 19)), .truncatedIPv4Header),
        ("IPv4 version 6", eth(0x0800, ipv4Header(version: 6, total: 20) + Array(repeating: 0, count: 26)), .badIPv4Header),
        ("IPv4 IHL 4", eth(0x0800, ipv4Header(ihl: 4, total: 20) + Array(repeating: 0, count: 26)), .badIPv4Header),
        ("IPv4 IHL beyond frame", eth(0x0800, ipv4Header(ihl: 15, total: 60) + Array(repeating: 0, count: 10)), .badIPv4Header),
        ("IPv4 total length > frame", eth(0x0800, ipv4Header(total: 100) + Array(repeating: 0, count: 26)), .badIPv4Length),
        ("IPv4 total length < header", eth(0x0800, ipv4Header(total: 19) + Array(repeating: 0, count: 26)), .badIPv4Length),
        ("truncated IPv6", eth(0x86DD, [0x60] + Array(repeating: 0, count: 38)), .truncatedIPv6Header),
        ("IPv6 version 4", eth(0x86DD, [0x40] + Array(repeating: 0, count: 39)), .badIPv6Header),
        ("IPv6 payload > frame", eth(0x86DD, [0x60, 0, 0, 0, 0, 9, 59, 64] + Array(repeating: 0, count: 32 + 8)), .badIPv6Length),
        ("truncated ARP", eth(0x0806, [0, 1, 8, 0, 6, 4, 0]), .truncatedARP),
        ("ARP shorter than its addresses", eth(0x0806, [0, 1, 8, 0, 6, 4, 0, 1] + Array(repeating: 0, count: 19)), .truncatedARP),
        ("tagged truncated IPv4", MACAddress.broadcast.bytes + src.bytes + [0x81, 0, 0, 5, 0x08, 0x00] + [0x45, 0, 0],
         .truncatedIPv4Header),
    ]

    @Test("Each kind of malformed frame is dropped with its reason; a good frame in the batch is still delivered",
          arguments: 0..<cases.count)
    func malformed(_ index: Int) throws {
        let (name, bad, reason) = Self.cases[index]
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: Self.src)
        let b = try es.addPort("b", mac: mac(2))
        let good = TestFrame.ipv4(dst: .broadcast, src: Self.src)
        es.send(from: a, [good, bad, good])
        #expect(es.take(b) == [good, good], "\(name)")
        #expect(es.dropCount(a, .ingress, reason) == 1, "\(name): not counted as \(es.sw.text(of: reason))")
        #expect(es.sw.counters(of: a)?.totalDrops == 1, "\(name)")
        #expect(es.sw.counters(of: a)?.framesIn == 3, "\(name)")
        #expect(es.drops.map(\.reason) == [es.sw.text(of: reason)], "\(name)")
    }

    @Test("Well-formed edge cases pass: padded IPv4, exact IPv6, ARP request, minimal untyped frame")
    func wellFormedEdges() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: Self.src)
        let b = try es.addPort("b", mac: mac(2))
        let frames = [
            TestFrame.ipv4(dst: .broadcast, src: Self.src, payloadLength: 0),  // 34 bytes, padding-free
            Self.eth(0x0800, Self.ipv4Header(total: 20) + Array(repeating: 0, count: 26)),  // Ethernet padding after IP
            TestFrame.ipv6(dst: .broadcast, src: Self.src, payloadLength: 0),
            TestFrame.arpRequest(src: Self.src, senderIP: 0x0A00_0001, targetIP: 0x0A00_0002),
            Self.eth(0x88B5, []),  // exactly 14 bytes
        ]
        es.send(from: a, frames)
        #expect(es.take(b) == frames)
        #expect(es.sw.counters(of: a)?.totalDrops == 0)
    }

    @Test("Random bytes never trap, and every frame is either delivered or counted as dropped")
    func fuzz() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        _ = try es.addPort("c", mac: mac(3))
        var rng = SplitMix64(seed: 42)
        var sent = 0
        for round in 0..<200 {
            var frames: [[UInt8]] = []
            for _ in 0..<32 {
                let length = Int(rng.next() % 101)
                var f = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                // Steer some frames into the parsers: force a known EtherType now and then.
                if length >= 14, rng.next() % 2 == 0 {
                    let types: [UInt16] = [0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8]
                    let t = types[Int(rng.next() % UInt64(types.count))]
                    f[12] = UInt8(t >> 8); f[13] = UInt8(t & 0xFF)
                    if rng.next() % 2 == 0 { f[6] &= 0xFE }  // unicast source
                    if length > 14, t == 0x0800 { f[14] = 0x45 }
                    if length > 14, t == 0x86DD { f[14] = 0x60 }
                }
                frames.append(f)
            }
            es.send(from: a, frames)
            sent += frames.count
            let deliveredToB = es.take(b).count
            for p in es.sw.ports { _ = es.take(p.id) }
            #expect(deliveredToB <= frames.count, "round \(round)")
        }
        let counters = try #require(es.sw.counters(of: a))
        #expect(counters.framesIn == UInt64(sent))
        // Every frame from a reaches b (flood or unknown unicast) unless it was dropped at a.
        #expect(es.sw.counters(of: b)!.framesOut + counters.totalDrops == UInt64(sent))
    }
}
