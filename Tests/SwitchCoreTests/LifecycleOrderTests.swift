import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Lifecycle order")
struct LifecycleOrderTests {
    @Test("VM start and stop: requests and events in Hyper-V order")
    func startStopOrder() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)

        let id = try es.addPort("tap0", mac: mac(1))
        #expect(ext.kinds == [.portCreate, .nicCreate, .nicConnect])
        #expect(ext.completedKinds == [.portCreate, .nicCreate, .nicConnect])
        #expect(ext.completions.allSatisfy { $0.outcome == .completed })
        #expect(es.eventKinds == [.portCreate, .nicCreate, .nicConnect])
        #expect(es.sw.nic(of: id)?.state == .connected)

        var done = false
        let deleted = try es.sw.removePort(id) { done = true }
        #expect(deleted)
        #expect(done)
        #expect(ext.kinds == [.portCreate, .nicCreate, .nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(es.eventKinds == [.portCreate, .nicCreate, .nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(ext.seen.allSatisfy { $0.port == id && !$0.isRestore })
        #expect(es.sw.ports.isEmpty)
        #expect(es.sw.port(id) == nil)
    }

    @Test("Requests carry the state they announce and the restore flag")
    func requestPayloads() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .capture)
        try es.sw.enable(ext)
        let id = try es.sw.createPort(name: "tap0", type: .synthetic, isRestore: true)
        try es.sw.createNIC(on: id, NICParameters(type: .synthetic, mtu: 9000, permanentMAC: mac(1)), isRestore: true)
        try es.sw.connectNIC(on: id, isRestore: true)
        try es.sw.removePort(id, isRestore: true)
        #expect(ext.seen.allSatisfy { $0.isRestore })
        #expect(es.events.allSatisfy { $0.isRestore })
        let nicStates = ext.requests.compactMap { $0.nic?.state }
        #expect(nicStates == [.created, .connected, .disconnected, .deleted])
        #expect(ext.requests.first { $0.kind == .nicCreate }?.nic?.mtu == 9000)
        #expect(ext.requests.first { $0.kind == .portTeardown }?.port.state == .tearingDown)
        #expect(ext.requests.first { $0.kind == .portDelete }?.port.state == .deleted)
    }

    @Test("Each request travels capture → filtering → forwarding, whatever the enable order")
    func stackOrderAcrossClasses() throws {
        let es = EmbeddedSwitch()
        let log = CallLog()
        let fwd = RecordingExtension("fwd", .forwarding, log: log)
        let filt = RecordingExtension("filt", .filtering, log: log)
        let cap = RecordingExtension("cap", .capture, log: log)
        try es.sw.enable(fwd)
        try es.sw.enable(filt)
        try es.sw.enable(cap)
        #expect(es.sw.extensions.map(\.name) == ["cap", "filt", "fwd"])
        #expect(es.sw.extensions.map(\.position) == [0, 0, 0], "positions count within each class")

        _ = try es.sw.createPort(name: "p", type: .synthetic)
        #expect(log.entries == ["cap:PORT_CREATE", "filt:PORT_CREATE", "fwd:PORT_CREATE"])
    }

    @Test("Within a class, order follows the enable position and reorder()")
    func orderWithinClass() throws {
        let es = EmbeddedSwitch()
        let log = CallLog()
        let a = RecordingExtension("a", .filtering, log: log)
        let b = RecordingExtension("b", .filtering, log: log)
        let c = RecordingExtension("c", .filtering, log: log)
        let cap = RecordingExtension("cap", .capture, log: log)
        try es.sw.enable(a)               // [a]
        try es.sw.enable(b, position: 0)  // [b a]
        try es.sw.enable(c, position: 1)  // [b c a]
        try es.sw.enable(cap)             // capture band above
        #expect(es.sw.extensions.map(\.name) == ["cap", "b", "c", "a"])
        #expect(es.sw.extensions.map(\.position) == [0, 0, 1, 2], "the positions enable() and reorder() take")

        let p1 = try es.sw.createPort(name: "p1", type: .synthetic)
        #expect(log.entries == ["cap:PORT_CREATE", "b:PORT_CREATE", "c:PORT_CREATE", "a:PORT_CREATE"])

        try es.sw.reorder("a", to: 0)
        #expect(es.sw.extensions.map(\.name) == ["cap", "a", "b", "c"])
        try es.sw.reorder("b", to: 2)
        #expect(es.sw.extensions.map(\.name) == ["cap", "a", "c", "b"])
        log.entries.removeAll()
        try es.sw.updatePort(p1, friendlyName: "renamed")
        #expect(log.entries == ["cap:PORT_UPDATED", "a:PORT_UPDATED", "c:PORT_UPDATED", "b:PORT_UPDATED"])

        #expect(throws: SwitchError.self) { try es.sw.reorder("a", to: 3) }
        #expect(throws: SwitchError.self) { try es.sw.enable(RecordingExtension("d", .filtering), position: 5) }
        #expect(es.sw.extensions.map(\.name) == ["cap", "a", "c", "b"])
    }

    @Test("A disabled extension sees nothing more")
    func disable() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        try es.sw.disable("rec")
        #expect(ext.detachCount == 1)
        _ = try es.addPort("tap0", mac: mac(1))
        #expect(ext.requests.isEmpty)
        #expect(es.sw.extensions.isEmpty)
        #expect(throws: SwitchError.self) { try es.sw.disable("rec") }
    }

    @Test("NIC_UPDATED and PORT_UPDATED reach extensions and events; no-op updates are not sent")
    func updates() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let id = try es.addPort("tap0", mac: mac(1))
        try es.sw.updateNIC(on: id, mtu: 9000)
        try es.sw.updateNIC(on: id, mtu: 9000)  // unchanged: not sent again
        try es.sw.updatePort(id, friendlyName: "web")
        #expect(ext.kinds.suffix(2) == [.nicUpdated, .portUpdated])
        #expect(es.eventKinds.suffix(2) == [.nicUpdated, .portUpdated])
        #expect(es.sw.nic(of: id)?.mtu == 9000)
        #expect(es.sw.port(id)?.friendlyName == "web")
        #expect(throws: SwitchError.self) { try es.sw.updateNIC(on: id, mtu: 20) }
        #expect(es.sw.nic(of: id)?.mtu == 9000)
    }

    @Test("A disconnected NIC can connect again (QEMU restarted on the same TAP)")
    func reconnect() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        try es.sw.disconnectNIC(on: b)
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
        try es.sw.connectNIC(on: b)
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).count == 1)
        #expect(es.eventKinds.suffix(2) == [.nicDisconnect, .nicConnect])
    }
}
