import EmbeddedSwitch
import SwitchCore
import Testing

/// A fast path in memory: what the switch installed and removed, with last-use stamps and
/// counters a test sets as the XDP program would.
final class RecordingDatapath: OffloadDatapath {
    var entries: [OffloadFlow: OffloadTarget] = [:]
    var stamps: [OffloadFlow: UInt64] = [:]
    var portCounters: [Int: FastPathCounters] = [:]
    var refuse = false
    private(set) var removed: [OffloadFlow] = []
    /// Called on each removal (to check ordering against lifecycle events).
    var onRemove: ((OffloadFlow) -> Void)?

    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool {
        guard !refuse else { return false }
        entries[flow] = target
        stamps[flow] = 0
        return true
    }

    func remove(_ flow: OffloadFlow) {
        entries[flow] = nil
        stamps[flow] = nil
        removed.append(flow)
        onRemove?(flow)
    }

    func lastUse(_ flow: OffloadFlow) -> UInt64? { stamps[flow] }

    func counters(portIndex: Int) -> FastPathCounters { portCounters[portIndex] ?? FastPathCounters() }

    func flows(from source: MACAddress) -> [OffloadFlow] { entries.keys.filter { $0.source == source } }
}

/// An extension that says per port whether it must see every frame.
final class OffloadGate: SwitchExtension {
    let name = "gate"
    let extensionClass = ExtensionClass.filtering
    var mustSee: Set<PortID> = []
    func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        mustSee.contains(port) ? .mustSeeEveryFrame(reason: "capturing") : .allowed
    }
}

@Suite("Offload: the fast path as a cache of the slow path's decisions")
struct OffloadTests {
    /// A switch with a fast path and two VM ports a, b that both support it and know each other.
    func pair(_ es: EmbeddedSwitch, _ dp: RecordingDatapath, properties: [PortProperty] = []) throws -> (PortID, PortID) {
        es.sw.setOffloadDatapath(dp)
        let a = try es.addPort("a", mac: mac(1), properties: properties)
        let b = try es.addPort("b", mac: mac(2), properties: properties)
        es.sw.setOffloadSupport(a, unsupportedReason: nil)
        es.sw.setOffloadSupport(b, unsupportedReason: nil)
        es.learn(a, mac(1))
        es.learn(b, mac(2))
        return (a, b)
    }

    @Test("A learned unicast flow is installed once, with both ends' indices; broadcast and unknown are not")
    func installsLearnedUnicast() throws {
        let es = EmbeddedSwitch()
        let dp = RecordingDatapath()
        let (a, b) = try pair(es, dp)
        #expect(dp.entries.isEmpty)  // the learning broadcasts are not cached
        es.send(from: a, frame(mac(9), mac(1)))  // unknown destination: flooded, not cached
        #expect(dp.entries.isEmpty)
        _ = es.take(b)
        es.send(from: a, [frame(mac(2), mac(1)), frame(mac(2), mac(1))])
        #expect(es.take(b).count == 2)
        let flow = try #require(dp.entries.keys.first)
        #expect(dp.entries.count == 1)
        #expect(flow.ingress == a && flow.source == mac(1) && flow.destination == mac(2) && flow.wireTag == 0)
        #expect(flow.ingressIndex == es.sw.portIndex(of: a))
        #expect(dp.entries[flow] == OffloadTarget(egress: b, egressIndex: es.sw.portIndex(of: b)!, vlan: 0))
        #expect(es.sw.offloadStatus(of: a) == .allowed)
        // Counters add what the fast path forwarded.
        let before = try #require(es.sw.counters(of: b))
        dp.portCounters[es.sw.portIndex(of: b)!] = FastPathCounters(framesOut: 5, bytesOut: 300)
        #expect(es.sw.counters(of: b)?.framesOut == before.framesOut + 5)
        #expect(es.sw.counters(of: b)?.bytesOut == before.bytesOut + 300)
    }

    @Test("No fast path, or a port without one: nothing installed, and show says why")
    func unsupported() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.learn(b, mac(2))
        es.learn(a, mac(1))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.sw.offloadStatus(of: a) == .mustSeeEveryFrame(reason: "offload is off"))
        let dp = RecordingDatapath()
        es.sw.setOffloadDatapath(dp)
        es.sw.setOffloadSupport(a, unsupportedReason: nil)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.isEmpty)
        #expect(es.sw.offloadStatus(of: b) == .mustSeeEveryFrame(reason: "not attached to the fast path"))
    }

    @Test("An extension that must see every frame keeps its ports on the slow path; its change removes entries before returning")
    func extensionPermission() throws {
        let es = EmbeddedSwitch()
        let dp = RecordingDatapath()
        let (a, b) = try pair(es, dp)
        let gate = OffloadGate()
        try es.sw.enable(gate)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.count == 1)
        gate.mustSee = [b]
        es.sw.offloadChanged(port: b)
        #expect(dp.entries.isEmpty)
        #expect(es.sw.offloadStatus(of: b) == .mustSeeEveryFrame(reason: "gate: capturing"))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.isEmpty)
        #expect(es.take(b).count == 2)  // still delivered, by the slow path

        // An extension with the default answer (per-frame callbacks) must see everything.
        gate.mustSee = []
        es.sw.offloadChanged()
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.count == 1)
        try es.sw.enable(RecordingExtension("watcher", .capture))
        #expect(dp.entries.isEmpty)
        #expect(es.sw.offloadStatus(of: a) == .mustSeeEveryFrame(reason: "watcher: watcher sees every frame"))
        try es.sw.disable("watcher")
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.count == 1)
    }

    @Test("NIC_DISCONNECT removes the NIC's entries before its event; the MAC is then free to move")
    func disconnectRemovesEntries() throws {
        let es = EmbeddedSwitch()
        let dp = RecordingDatapath()
        let (a, b) = try pair(es, dp)
        es.send(from: a, frame(mac(2), mac(1)))
        es.send(from: b, frame(mac(1), mac(2)))
        #expect(dp.entries.count == 2)
        var eventsAtRemoval: [Int] = []
        dp.onRemove = { _ in eventsAtRemoval.append(es.events.count) }
        let eventsBefore = es.events.count
        try es.sw.disconnectNIC(on: b)
        #expect(dp.entries.isEmpty)
        #expect(eventsAtRemoval == [eventsBefore, eventsBefore])  // before nic-disconnect was emitted
    }

    @Test("A MAC moving to another port removes its entries within the frame that moved it")
    func macMove() throws {
        let es = EmbeddedSwitch()
        let dp = RecordingDatapath()
        let (a, b) = try pair(es, dp)
        let c = try es.addPort("c", mac: mac(3))
        es.sw.setOffloadSupport(c, unsupportedReason: nil)
        // Unpin b's addresses so they may move (VM ports are pinned by default).
        es.sw.macTable.setPinned(slot: UInt16(es.sw.portIndex(of: b)!), false)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.values.first?.egress == b)
        es.send(from: c, frame(.broadcast, mac(2)))  // mac(2) now on c
        #expect(dp.entries.isEmpty)
        _ = es.take(a); _ = es.take(b); _ = es.take(c)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(c).count == 1 && es.take(b).isEmpty)
        #expect(dp.entries.values.first?.egress == c)
    }

    @Test("Aging: a source the fast path keeps using stays learned; an idle one ages out with its entries")
    func aging() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 8, batchCapacity: 8, macAgingSeconds: 10))
        let dp = RecordingDatapath()
        let (a, b) = try pair(es, dp)
        es.send(from: a, frame(mac(2), mac(1)))
        es.send(from: b, frame(mac(1), mac(2)))
        let flow = try #require(dp.flows(from: mac(1)).first)
        let back = try #require(dp.flows(from: mac(2)).first)
        for t in 1...4 {
            dp.stamps[flow] = UInt64(t)  // the program stamps each use
            dp.stamps[back] = UInt64(t)
            es.advance(seconds: 4)
        }
        #expect(es.sw.macEntries().contains { $0.mac == mac(1) })
        #expect(dp.entries[flow] != nil && dp.entries[back] != nil)
        dp.stamps[back] = 99  // only b keeps sending: mac(1) ages out, with both entries (from and to it)
        es.advance(seconds: 6)
        dp.stamps[back] = 100
        es.advance(seconds: 6)
        #expect(!es.sw.macEntries().contains { $0.mac == mac(1) })
        #expect(es.sw.macEntries().contains { $0.mac == mac(2) })
        #expect(dp.entries.isEmpty)
    }

    @Test("Egress forms: same access VLAN unchanged, a tag pushed onto a trunk, popped toward an access port; a rewritten priority tag is not cached")
    func vlanForms() throws {
        let es = EmbeddedSwitch()
        let dp = RecordingDatapath()
        let (a, _) = try pair(es, dp, properties: [.vlan(.access(10))])
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [10], native: nil))])
        es.sw.setOffloadSupport(t, unsupportedReason: nil)
        es.send(from: t, frame(.broadcast, mac(3), vlan: 10))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(dp.entries.count == 1)
        #expect(dp.entries.values.first?.egressTag == .unchanged)
        es.send(from: a, frame(mac(3), mac(1)))  // tag pushed toward the trunk
        let pushed = es.take(t)
        #expect(pushed.count == 1 && pushed.first?[12] == 0x81 && pushed.first?[15] == 10)
        let push = try #require(dp.entries.first { $0.key.destination == mac(3) })
        #expect(push.key.wireTag == 0 && push.value.egressTag == .push(10) && push.value.vlan == 10)
        es.send(from: t, frame(mac(1), mac(3), vlan: 10))  // tag popped toward the access port
        let pop = try #require(dp.entries.first { $0.key.destination == mac(1) })
        #expect(pop.key.wireTag == 0x100A && pop.value.egressTag == .pop)
        #expect(dp.entries.count == 3)
        // A priority tag (VID 0) onto the trunk is rewritten to VID 10 by the slow path: not cached.
        var priority = frame(mac(3), mac(1), vlan: 0)
        priority[14] = 0xA0  // PCP 5
        es.send(from: a, priority)
        if let f = es.take(t).first { #expect(f[14] == 0xA0 && f[15] == 10) }
        #expect(!dp.entries.keys.contains { $0.wireTag == 0x1000 })
        // A property change takes the port's entries out.
        try es.sw.updateProperty(.vlan(.access(20)), on: a)
        #expect(dp.entries.isEmpty)
    }
}
