import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Vetoes")
struct VetoTests {
    /// capture "cap" above filtering "filt" above forwarding "fwd".
    func stack(_ es: EmbeddedSwitch) throws -> (cap: RecordingExtension, filt: RecordingExtension, fwd: RecordingExtension) {
        let cap = RecordingExtension("cap", .capture)
        let filt = RecordingExtension("filt", .filtering)
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(cap)
        try es.sw.enable(filt)
        try es.sw.enable(fwd)
        return (cap, filt, fwd)
    }

    @Test("PORT_CREATE vetoed by a filtering extension: no port, error names who and why")
    func portCreateVeto() throws {
        let es = EmbeddedSwitch()
        let (cap, filt, fwd) = try stack(es)
        filt.vetoes[.portCreate] = "no ports on Tuesdays"

        let error = #expect(throws: SwitchError.self) { try es.sw.createPort(name: "tap0", type: .synthetic) }
        #expect(error?.code == .vetoed)
        #expect(error?.vetoingExtension == "filt")
        #expect(error?.vetoReason == "no ports on Tuesdays")
        #expect(error?.message.contains("filt") == true)
        #expect(es.sw.ports.isEmpty)
        #expect(es.sw.port(named: "tap0") == nil)

        #expect(es.events.count == 1)
        let veto = try #require(es.events.first)
        #expect(veto.kind == .veto)
        #expect(veto.vetoedRequest == .portCreate)
        #expect(veto.vetoingExtension == "filt")
        #expect(veto.vetoReason == "no ports on Tuesdays")

        #expect(fwd.requests.isEmpty)  // below the veto: never saw it
        #expect(cap.completions.count == 1)
        #expect(cap.completions.first?.outcome == .vetoed(by: "filt", reason: "no ports on Tuesdays"))
        #expect(filt.completions.isEmpty)  // the vetoing extension completed it itself

        // Nothing half-made: the name can be used once the veto is lifted.
        filt.vetoes = [:]
        let id = try es.sw.createPort(name: "tap0", type: .synthetic)
        #expect(es.sw.ports.map(\.id) == [id])
    }

    @Test("NIC_CREATE vetoed during createPort(name:nic:): the port is torn down again")
    func nicCreateVetoTearsDownPort() throws {
        let es = EmbeddedSwitch()
        let (cap, filt, fwd) = try stack(es)
        fwd.vetoes[.nicCreate] = "MAC not allowed"

        let error = #expect(throws: SwitchError.self) { try es.addPort("tap0", mac: mac(1)) }
        #expect(error?.code == .vetoed)
        #expect(error?.vetoingExtension == "fwd")
        #expect(es.eventKinds == [.portCreate, .veto, .portTeardown, .portDelete])
        #expect(es.events[1].vetoedRequest == .nicCreate)
        #expect(cap.kinds == [.portCreate, .nicCreate, .portTeardown, .portDelete])
        #expect(filt.completions.first { $0.request.kind == .nicCreate }?.outcome == .vetoed(by: "fwd", reason: "MAC not allowed"))
        #expect(es.sw.ports.isEmpty)

        fwd.vetoes = [:]
        let id = try es.addPort("tap0", mac: mac(1))
        #expect(es.sw.nic(of: id)?.state == .connected)
    }

    @Test("A vetoed property leaves the properties (and their effect) unchanged")
    func propertyVetoes() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))])
        let b = try es.addPort("b", mac: mac(2), properties: [.vlan(.access(10))])
        let custom = PortProperty.custom(key: "qos", version: 1, data: [1])

        filt.vetoes[.propertyAdd] = "no"
        #expect(throws: SwitchError.self) { try es.sw.addProperty(custom, to: a) }
        #expect(es.sw.properties(of: a) == [.vlan(.access(10))])

        filt.vetoes = [.propertyUpdate: "no"]
        #expect(throws: SwitchError.self) { try es.sw.updateProperty(.vlan(.access(20)), on: a) }
        #expect(es.sw.properties(of: a) == [.vlan(.access(10))])
        // Still in VLAN 10 with b: traffic flows.
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).count == 1)

        filt.vetoes = [.propertyDelete: "no"]
        #expect(throws: SwitchError.self) { try es.sw.deleteProperty(.vlan, from: a) }
        #expect(es.sw.properties(of: a) == [.vlan(.access(10))])
        #expect(es.events.filter { $0.kind == .veto }.map(\.vetoedRequest) == [.propertyAdd, .propertyUpdate, .propertyDelete])

        // Without vetoes the same requests take effect.
        filt.vetoes = [:]
        try es.sw.addProperty(custom, to: a)
        try es.sw.updateProperty(.vlan(.access(20)), on: a)
        #expect(es.sw.properties(of: a) == [.vlan(.access(20)), custom])
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
        try es.sw.deleteProperty(.vlan, from: a)
        #expect(es.sw.properties(of: a) == [custom])
    }

    @Test("A property veto during createPort(name:nic:properties:) leaves no port behind")
    func propertyVetoDuringCreate() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        filt.vetoes[.propertyAdd] = "bad vlan"
        #expect(throws: SwitchError.self) { try es.addPort("a", mac: mac(1), properties: [.vlan(.access(10))]) }
        #expect(es.sw.ports.isEmpty)
        #expect(!filt.kinds.contains(.nicCreate))
        #expect(es.eventKinds == [.portCreate, .veto, .portTeardown, .portDelete])
    }

    @Test("A capture extension's veto is ignored, with a diagnostic")
    func captureVetoIgnored() throws {
        let es = EmbeddedSwitch()
        let (cap, _, fwd) = try stack(es)
        cap.vetoes[.portCreate] = "capture says no"
        let id = try es.sw.createPort(name: "tap0", type: .synthetic)
        #expect(es.sw.port(id) != nil)
        #expect(fwd.kinds == [.portCreate])
        #expect(cap.completions.first?.outcome == .completed)
        #expect(es.diagnostics.contains { $0.contains("cap") && $0.contains("PORT_CREATE") })
        #expect(!es.eventKinds.contains(.veto))
    }

    @Test("A veto of a non-vetoable request (NIC_CONNECT, NIC_DISCONNECT) is ignored")
    func nonVetoableIgnored() throws {
        let es = EmbeddedSwitch()
        let (_, filt, fwd) = try stack(es)
        filt.vetoes[.nicConnect] = "no"
        filt.vetoes[.nicDisconnect] = "no"
        let id = try es.addPort("tap0", mac: mac(1))
        #expect(es.sw.nic(of: id)?.state == .connected)
        #expect(fwd.kinds.contains(.nicConnect))
        #expect(es.diagnostics.contains { $0.contains("NIC_CONNECT") })
        try es.sw.removePort(id)
        #expect(es.sw.ports.isEmpty)
        #expect(es.diagnostics.contains { $0.contains("NIC_DISCONNECT") })
    }
}
