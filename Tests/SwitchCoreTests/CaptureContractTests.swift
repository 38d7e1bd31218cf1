import EmbeddedSwitch
import SwitchCore
import Testing

/// A capture extension that records what the contract shows it: drops (with reason and reporter)
/// and deliveries (the bytes each port received).
final class CaptureRecorder: SwitchExtension {
    struct Drop: Equatable {
        let port: PortID
        let direction: Direction
        let reason: String
        let reporter: String?
        let bytes: [UInt8]
    }

    let name: String
    let extensionClass = ExtensionClass.capture
    private(set) var drops: [Drop] = []
    private(set) var deliveries: [(port: PortID, bytes: [UInt8])] = []
    private(set) var ingressFrames: [[UInt8]] = []

    init(_ name: String = "capture-recorder") { self.name = name }

    func ingress(_ context: inout IngressContext) {
        for i in context.frames where context.isLive(i) { ingressFrames.append(context.batch.copyBytes(i)) }
    }

    func dropped(_ context: DropContext) {
        drops.append(Drop(port: context.port, direction: context.direction, reason: context.sw.text(of: context.reason),
                          reporter: context.sw.extensionName(atStackIndex: context.reporterIndex), bytes: Array(context.bytes)))
    }

    func delivered(_ context: DeliveryContext) {
        for i in context.frames { deliveries.append((context.port, context.batch.copyBytes(Int(i)))) }
    }

    func delivered(to port: PortID) -> [[UInt8]] { deliveries.filter { $0.port == port }.map(\.bytes) }
}

@Suite("Capture contract (issue 14)")
struct CaptureContractTests {
    @Test("Capture sees frames dropped at admission, with the reason: malformed, VLAN not allowed, source not accepting")
    func admissionDrops() throws {
        let es = EmbeddedSwitch()
        let cap = CaptureRecorder()
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let idle = try es.addPort("idle", mac: mac(3))
        try es.sw.disconnectNIC(on: idle)

        let runt: [UInt8] = Array(repeating: 0xFF, count: 10)
        let hop = frame(.broadcast, mac(1), vlan: 20)
        let good = frame(.broadcast, mac(1), tag: 0x55)
        es.send(from: a, [runt, hop, good])
        es.send(from: idle, frame(.broadcast, mac(3)))

        #expect(es.take(b) == [good])  // positive control: the good frame in the same batch got through
        #expect(cap.ingressFrames == [good])  // dropped frames never reach the stack ...
        #expect(cap.drops == [  // ... but capture sees each, at the moment of the drop
            .init(port: a, direction: .ingress, reason: es.sw.text(of: .runtFrame), reporter: nil, bytes: runt),
            .init(port: a, direction: .ingress, reason: es.sw.text(of: .vlanNotAllowed), reporter: nil, bytes: hop),
            .init(port: idle, direction: .ingress, reason: es.sw.text(of: .sourceNotAccepting), reporter: nil, bytes: frame(.broadcast, mac(3))),
        ])
    }

    @Test("Capture sees drops by extensions and exclusions, naming the extension")
    func extensionDrops() throws {
        let es = EmbeddedSwitch()
        let cap = CaptureRecorder()
        try es.sw.enable(cap)
        let filter = RecordingExtension("dropper", .filtering)
        var reason: DropReason?
        filter.onAttached = { reason = $0.registerDropReason("test reason") }
        filter.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.bytes(i)[20] == 0xDD { ctx.drop(i, reason: reason!) }
        }
        filter.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.bytes(i)[20] == 0xEE { ctx.exclude(i, destination: 0, reason: reason!) }
        }
        try es.sw.enable(filter)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, [frame(.broadcast, mac(1), tag: 0xDD), frame(.broadcast, mac(1), tag: 0xEE), frame(.broadcast, mac(1), tag: 0x11)])
        #expect(es.take(b) == [frame(.broadcast, mac(1), tag: 0x11)])
        #expect(cap.drops.map { "\($0.port) \($0.direction) \($0.reason) \($0.reporter ?? "switch") \($0.bytes[20])" } == [
            "\(a) ingress test reason dropper 221",
            "\(b) egress test reason dropper 238",
            "\(a) ingress all destinations excluded switch 238",
        ])
    }

    @Test("Egress capture sees the bytes as delivered: tag pushed for a trunk, popped for an access port, per destination")
    func deliveredBytes() throws {
        let es = EmbeddedSwitch()
        let cap = CaptureRecorder()
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let t = try es.addPort("t", mac: mac(4), properties: [.vlan(.trunk(allowed: [10, 20], native: nil))])
        es.send(from: a, frame(.broadcast, mac(1), tag: 0x21))
        let atB = es.take(b)
        let atT = es.take(t)
        #expect(atB == [frame(.broadcast, mac(1), tag: 0x21)])
        #expect(atT == [frame(.broadcast, mac(1), tag: 0x21, vlan: 10)])
        #expect(cap.delivered(to: b) == atB)
        #expect(cap.delivered(to: t) == atT)
        // From the trunk, tagged: the access port gets it untagged, and capture sees that.
        es.send(from: t, frame(.broadcast, mac(4), tag: 0x22, vlan: 10))
        #expect(es.take(a) == [frame(.broadcast, mac(4), tag: 0x22)])
        #expect(cap.delivered(to: a) == [frame(.broadcast, mac(4), tag: 0x22)])
        #expect(cap.ingressFrames.last == frame(.broadcast, mac(4), tag: 0x22, vlan: 10))
    }

    @Test("Frames a port's queue could not take are drops at that port, not deliveries")
    func transmitFailures() throws {
        let es = EmbeddedSwitch()
        let cap = CaptureRecorder()
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.transmitLimit[b] = 1
        es.send(from: a, [frame(.broadcast, mac(1), tag: 1), frame(.broadcast, mac(1), tag: 2)])
        #expect(es.take(b) == [frame(.broadcast, mac(1), tag: 1)])
        #expect(cap.delivered(to: b) == [frame(.broadcast, mac(1), tag: 1)])
        #expect(cap.drops.map { "\($0.port) \($0.direction) \($0.reason) \($0.bytes[20])" } == ["\(b) egress \(es.sw.text(of: .transmitQueueFull)) 2"])
    }

    @Test("A disabled capture extension sees nothing more")
    func disabled() throws {
        let es = EmbeddedSwitch()
        let cap = CaptureRecorder()
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(cap.delivered(to: b).count == 1)
        try es.sw.disable(cap.name)
        es.send(from: a, [frame(.broadcast, mac(1)), Array(repeating: 0xFF, count: 8)])
        #expect(es.take(b).count == 2)
        #expect(cap.delivered(to: b).count == 1 && cap.drops.isEmpty)
    }
}
