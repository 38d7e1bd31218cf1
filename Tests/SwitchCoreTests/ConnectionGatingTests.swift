import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("No delivery outside NIC_CONNECT ... NIC_DISCONNECT")
struct ConnectionGatingTests {
    @Test("A created but not connected NIC receives nothing, not even broadcast; it may send")
    func createdNotConnected() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2), connect: false)
        let c = try es.addPort("c", mac: mac(3))
        es.send(from: a, frame(.broadcast, mac(1)))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).isEmpty)
        #expect(es.take(c).count == 2)
        #expect(es.sw.counters(of: b)?.framesOut == 0)

        // Traffic from a created NIC may already flow (Hyper-V's state table).
        es.send(from: b, frame(.broadcast, mac(2)))
        #expect(es.take(a).count == 1)
        #expect(es.take(c).count == 1)
    }

    @Test("Nothing is delivered after NIC_DISCONNECT, and frames from it are refused")
    func afterDisconnect() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(2))
        try es.sw.disconnectNIC(on: b)
        es.send(from: a, frame(.broadcast, mac(1)))
        es.send(from: a, frame(mac(2), mac(1)))  // was learned on b: now unknown, floods to c only
        #expect(es.take(b).isEmpty)
        #expect(es.take(c).count == 2)

        es.send(from: b, frame(.broadcast, mac(2)))
        #expect(es.take(a).isEmpty)
        #expect(es.dropCount(b, .ingress, .sourceNotAccepting) == 1)
    }

    @Test("A port without a NIC cannot send")
    func portWithoutNIC() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let bare = try es.sw.createPort(name: "bare", type: .synthetic)
        es.send(from: bare, frame(.broadcast, mac(9)))
        #expect(es.take(a).isEmpty)
        #expect(es.dropCount(bare, .ingress, .sourceNotAccepting) == 1)
    }

    @Test("A forwarding extension cannot address a NIC that is not connected")
    func addDestinationRefused() throws {
        let es = EmbeddedSwitch()
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let created = try es.addPort("b", mac: mac(2), connect: false)
        let gone = try es.addPort("c", mac: mac(3))
        try es.sw.disconnectNIC(on: gone)
        var results: [Bool] = []
        fwd.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                results.append(ctx.addDestination(i, port: created))
                results.append(ctx.addDestination(i, port: gone))
                results.append(ctx.addDestination(i, port: PortID(999)))
                results.append(ctx.addDestination(i, port: .switchItself))
            }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(results == [false, false, false, false])
        #expect(es.take(created).isEmpty)
        #expect(es.take(gone).isEmpty)
        #expect(es.dropCount(a, .ingress, .noDestination) == 1)
    }

    @Test("Injection with the identity of a disconnected port is refused")
    func injectAsDisconnected() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        try es.sw.disconnectNIC(on: b)
        var injected: [Int?] = []
        let probe = frame(.broadcast, mac(2), tag: 0x77)
        filt.onIngress = { ctx in
            guard injected.isEmpty else { return }
            probe.withUnsafeBytes { injected.append(ctx.inject($0, source: b)) }
            probe.withUnsafeBytes { injected.append(ctx.inject($0, source: PortID(999))) }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(injected == [nil, nil])
        #expect(es.take(c) == [frame(.broadcast, mac(1))])
        #expect(es.diagnostics.contains { $0.contains("filt") && $0.contains("identity") })
        #expect(es.sw.injectedFrames == 0)
    }
}
