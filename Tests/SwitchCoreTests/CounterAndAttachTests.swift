import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Counters")
struct CounterTests {
    @Test("Frames and bytes in and out, per port")
    func trafficCounters() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(2))  // 1 broadcast from b: 60 bytes in at b, out at a and c
        let f1 = frame(mac(2), mac(1))
        let f2 = TestFrame.ipv4(dst: mac(2), src: mac(1), payloadLength: 100)
        es.send(from: a, [f1, f2])
        let ca = try #require(es.sw.counters(of: a))
        let cb = try #require(es.sw.counters(of: b))
        let cc = try #require(es.sw.counters(of: c))
        #expect(ca.framesIn == 2 && ca.bytesIn == UInt64(f1.count + f2.count))
        #expect(ca.framesOut == 1 && ca.bytesOut == 60)
        #expect(cb.framesIn == 1 && cb.bytesIn == 60)
        #expect(cb.framesOut == 2 && cb.bytesOut == UInt64(f1.count + f2.count))
        #expect(cc.framesOut == 1 && cc.framesIn == 0)
        #expect(ca.drops.isEmpty && cb.drops.isEmpty)
        #expect(es.sw.counters(of: PortID(999)) == nil)
    }

    @Test("Drops are kept by direction, reason and the core stage or extension that reported them")
    func dropKeys() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, [[1, 2, 3], [4, 5]])
        es.transmitLimit[b] = 0
        es.send(from: a, frame(.broadcast, mac(1)))
        let ca = try #require(es.sw.counters(of: a))
        let cb = try #require(es.sw.counters(of: b))
        #expect(ca.drops == [PortCounters.DropKey(direction: .ingress, reason: es.sw.text(of: .runtFrame), reporter: "core:admission"): 2])
        #expect(cb.drops == [PortCounters.DropKey(direction: .egress, reason: es.sw.text(of: .transmitQueueFull), reporter: "core:delivery"): 1])
        #expect(es.drops.last?.summary == "\(b) egress transmit queue full by core:delivery")
    }

    @Test("A full transmit queue (ENOBUFS) delivers the first frames and counts the rest at the destination")
    func transmitQueueFull() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.transmitLimit[b] = 3
        let frames = (0..<10).map { frame(.broadcast, mac(1), tag: UInt8($0)) }
        es.send(from: a, frames)
        #expect(es.take(b) == Array(frames[0..<3]))
        #expect(es.take(c) == frames)
        let cb = try #require(es.sw.counters(of: b))
        #expect(cb.framesOut == 3)
        #expect(cb.bytesOut == 3 * 60)
        #expect(es.dropCount(b, .egress, .transmitQueueFull) == 7)
        #expect(es.dropCount(a, .ingress, .transmitQueueFull) == 0)
        #expect(es.sw.counters(of: c)?.framesOut == 10)
    }

    @Test("Drops of injected frames are counted against the switch, not a port")
    func switchDrops() throws {
        let es = EmbeddedSwitch()
        let cap = RecordingExtension("cap", .capture)
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1))
        var once = true
        cap.onIngress = { ctx in
            guard once else { return }
            once = false
            let runt: [UInt8] = [1, 2, 3]
            runt.withUnsafeBytes { _ = ctx.inject($0) }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.sw.switchDropCounters[PortCounters.DropKey(direction: .ingress, reason: es.sw.text(of: .runtFrame), reporter: "core:admission")] == 1)
        // Its own broadcast found no other port: not a drop, but counted as such a flood.
        #expect(es.sw.counters(of: a)?.totalDrops == 0)
        #expect(es.sw.floodsWithoutPort == 1)
    }

    @Test("A batch larger than the switch's batch capacity traps instead of overrunning its tables")
    func oversizedBatch() async throws {
        await #expect(processExitsWith: .failure) {
            let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 4, batchCapacity: 4))
            let a = try es.addPort("a", mac: mac(1))
            _ = try es.addPort("b", mac: mac(2))
            let big = FrameBatch(capacity: 16, slotSize: 256, maxDestinations: 4)
            for n in 0..<16 { big.append(frame(.broadcast, mac(1), tag: UInt8(n))) }
            es.sw.process(big, from: a, to: es)
        }
    }
}

@Suite("Attaching to a running switch")
struct AttachTests {
    @Test("An extension enabled late enumerates existing ports, NICs and properties, then sees live requests")
    func lateAttach() throws {
        let es = EmbeddedSwitch()
        let custom = PortProperty.custom(key: "acl", version: 0x0102, data: [9, 9])
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10)), custom])
        let b = try es.addPort("b", mac: mac(2), connect: false)
        let bare = try es.sw.createPort(name: "bare", type: .internal)

        let ext = RecordingExtension("late", .filtering)
        var seenPorts: [PortParameters] = []
        var seenNICs: [PortID: NICParameters] = [:]
        var seenProps: [PortID: [PortProperty]] = [:]
        ext.onAttached = { sw in
            seenPorts = sw.ports
            for p in seenPorts {
                if let nic = sw.nic(of: p.id) { seenNICs[p.id] = nic }
                seenProps[p.id] = sw.properties(of: p.id)
            }
        }
        try es.sw.enable(ext)
        #expect(ext.attachCount == 1)
        #expect(ext.requests.isEmpty, "no replay of earlier requests")
        #expect(seenPorts.map(\.id) == [a, b, bare])
        #expect(seenPorts.map(\.name) == ["a", "b", "bare"])
        #expect(seenPorts.map(\.type) == [.synthetic, .synthetic, .internal])
        #expect(seenNICs[a]?.state == .connected)
        #expect(seenNICs[a]?.permanentMAC == mac(1))
        #expect(seenNICs[b]?.state == .created)
        #expect(seenNICs[bare] == nil)
        #expect(seenProps[a] == [.vlan(.access(10)), custom])
        #expect(seenProps[b] == [])

        try es.sw.connectNIC(on: b)
        try es.sw.removePort(a)
        #expect(ext.seen.map(\.kind) == [.nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(ext.seen.first?.port == b)

        // A late extension also sees traffic.
        let c = try es.addPort("c", mac: mac(3))
        es.send(from: c, frame(.broadcast, mac(3)))
        #expect(ext.ingressFrames == [frame(.broadcast, mac(3))])
        #expect(es.take(b).count == 1)
    }

    @Test("Property requests carry the property; delete carries the removed one")
    func propertyRequests() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let a = try es.addPort("a", mac: mac(1))
        let v1 = PortProperty.custom(key: "k", version: 1, data: [1])
        let v2 = PortProperty.custom(key: "k", version: 2, data: [2, 2])
        try es.sw.addProperty(v1, to: a)
        try es.sw.updateProperty(v2, on: a)
        try es.sw.deleteProperty(.custom("k"), from: a)
        let props = ext.requests.filter { $0.property != nil }
        #expect(props.map(\.kind) == [.propertyAdd, .propertyUpdate, .propertyDelete])
        #expect(props.map(\.property) == [v1, v2, v2])
        #expect(props.allSatisfy { $0.port.id == a && $0.nic?.state == .connected })
        #expect(es.sw.properties(of: a).isEmpty)
    }
}
