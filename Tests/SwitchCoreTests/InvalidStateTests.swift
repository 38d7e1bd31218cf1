import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Out-of-order lifecycle calls")
struct InvalidStateTests {
    /// Runs `body`, expects a SwitchError with `code`, and checks that neither the extension nor the
    /// event stream saw anything.
    func refused(_ code: SwitchError.Code, _ es: EmbeddedSwitch, _ ext: RecordingExtension,
                 sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        let requests = ext.requests.count
        let events = es.events.count
        let error = #expect(throws: SwitchError.self, sourceLocation: sourceLocation) { try body() }
        #expect(error?.code == code, sourceLocation: sourceLocation)
        #expect(ext.requests.count == requests, "extension saw a refused request", sourceLocation: sourceLocation)
        #expect(es.events.count == events, "refused request produced an event", sourceLocation: sourceLocation)
    }

    @Test("Each out-of-order step is refused with invalidState and changes nothing")
    func outOfOrder() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let id = try es.sw.createPort(name: "p", type: .synthetic)

        refused(.invalidState, es, ext) { try es.sw.connectNIC(on: id) }            // connect before create
        refused(.invalidState, es, ext) { try es.sw.disconnectNIC(on: id) }         // no NIC
        refused(.invalidState, es, ext) { try es.sw.deletePort(id) }                // delete before teardown
        refused(.invalidState, es, ext) { try es.sw.updateNIC(on: id, mtu: 1400) }  // no NIC

        try es.sw.createNIC(on: id, NICParameters(type: .synthetic, permanentMAC: mac(1)))
        refused(.invalidState, es, ext) { try es.sw.createNIC(on: id, NICParameters(type: .synthetic, permanentMAC: mac(1))) }
        refused(.invalidState, es, ext) { try es.sw.deleteNIC(on: id) }             // not disconnected
        refused(.invalidState, es, ext) { try es.sw.teardownPort(id) }              // NIC still there
        refused(.invalidState, es, ext) { try es.sw.updateNIC(on: id, mtu: 1400) }  // created, not connected

        try es.sw.connectNIC(on: id)
        refused(.invalidState, es, ext) { try es.sw.connectNIC(on: id) }            // already connected
        refused(.invalidState, es, ext) { try es.sw.deleteNIC(on: id) }             // NIC_DELETE while connected
        refused(.invalidState, es, ext) { try es.sw.teardownPort(id) }              // teardown with a NIC

        try es.sw.disconnectNIC(on: id)
        refused(.invalidState, es, ext) { try es.sw.updateNIC(on: id, mtu: 1400) }  // NIC_UPDATED on disconnected
        refused(.invalidState, es, ext) { try es.sw.disconnectNIC(on: id) }         // double disconnect
        refused(.invalidState, es, ext) { try es.sw.teardownPort(id) }
        #expect(es.sw.nic(of: id)?.state == .disconnected)

        try es.sw.deleteNIC(on: id)
        refused(.invalidState, es, ext) { try es.sw.deleteNIC(on: id) }             // no NIC any more
        refused(.invalidState, es, ext) { try es.sw.deletePort(id) }                // not torn down
        try es.sw.teardownPort(id)
        refused(.invalidState, es, ext) { try es.sw.teardownPort(id) }              // twice
        refused(.invalidState, es, ext) { try es.sw.createNIC(on: id, NICParameters(type: .synthetic, permanentMAC: mac(1))) }
        refused(.invalidState, es, ext) { try es.sw.addProperty(.vlan(.access(5)), to: id) }
        refused(.invalidState, es, ext) { try es.sw.updatePort(id, friendlyName: "x") }
        refused(.invalidState, es, ext) { try es.sw.referencePort(id) }
        try es.sw.deletePort(id)
        #expect(es.sw.ports.isEmpty)
        #expect(ext.kinds == [.portCreate, .nicCreate, .nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete])
    }

    @Test("Operations on unknown ports fail with notFound")
    func unknownPorts() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let ghost = PortID(4242)
        refused(.notFound, es, ext) { try es.sw.createNIC(on: ghost, NICParameters(type: .synthetic, permanentMAC: mac(1))) }
        refused(.notFound, es, ext) { try es.sw.connectNIC(on: ghost) }
        refused(.notFound, es, ext) { try es.sw.disconnectNIC(on: ghost) }
        refused(.notFound, es, ext) { try es.sw.deleteNIC(on: ghost) }
        refused(.notFound, es, ext) { try es.sw.teardownPort(ghost) }
        refused(.notFound, es, ext) { try es.sw.deletePort(ghost) }
        refused(.notFound, es, ext) { try es.sw.removePort(ghost) }
        refused(.notFound, es, ext) { try es.sw.updatePort(ghost, friendlyName: "x") }
        refused(.notFound, es, ext) { try es.sw.addProperty(.vlan(.access(5)), to: ghost) }
        refused(.notFound, es, ext) { try es.sw.referenceNIC(on: ghost) }
        refused(.notFound, es, ext) { try es.sw.referencePort(ghost) }
        // The switch itself (port 0) is not a port either.
        refused(.notFound, es, ext) { try es.sw.connectNIC(on: .switchItself) }
    }

    @Test("Bad arguments: duplicate name, empty name, NIC index, MTU, VLAN ids")
    func badArguments() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let id = try es.sw.createPort(name: "p", type: .synthetic)
        refused(.exists, es, ext) { try es.sw.createPort(name: "p", type: .synthetic) }
        refused(.invalidArgument, es, ext) { try es.sw.createPort(name: "", type: .synthetic) }
        refused(.invalidArgument, es, ext) { try es.sw.createNIC(on: id, NICParameters(index: 1, type: .synthetic, permanentMAC: mac(1))) }
        refused(.invalidArgument, es, ext) { try es.sw.createNIC(on: id, NICParameters(type: .synthetic, mtu: 67, permanentMAC: mac(1))) }
        refused(.invalidArgument, es, ext) { try es.sw.addProperty(.vlan(.access(0)), to: id) }
        refused(.invalidArgument, es, ext) { try es.sw.addProperty(.vlan(.access(4095)), to: id) }
        refused(.invalidArgument, es, ext) { try es.sw.addProperty(.vlan(.trunk(allowed: [5, 5000], native: nil)), to: id) }
        try es.sw.addProperty(.vlan(.access(5)), to: id)
        refused(.exists, es, ext) { try es.sw.addProperty(.vlan(.access(6)), to: id) }
        refused(.notFound, es, ext) { try es.sw.updateProperty(.security(SecurityPolicy()), on: id) }
        refused(.notFound, es, ext) { try es.sw.deleteProperty(.custom("nope"), from: id) }
    }

    @Test("The port limit is enforced and a freed slot is reused")
    func portLimit() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 2, batchCapacity: 8))
        let a = try es.sw.createPort(name: "a", type: .synthetic)
        _ = try es.sw.createPort(name: "b", type: .synthetic)
        let error = #expect(throws: SwitchError.self) { try es.sw.createPort(name: "c", type: .synthetic) }
        #expect(error?.code == .limitReached)
        try es.sw.removePort(a)
        let c = try es.sw.createPort(name: "c", type: .synthetic)
        #expect(c != a)  // ids are not reused at once
        #expect(es.sw.ports.count == 2)
    }

    @Test("A lifecycle call from inside an extension's control callback is refused")
    func reentrantRefused() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        var inner: [SwitchError] = []
        ext.onControl = { request, sw in
            guard request.kind == .portCreate else { return }
            do throws(SwitchError) { try sw.createPort(name: "inner", type: .synthetic) } catch { inner.append(error) }
            do throws(SwitchError) { try sw.removePort(request.port.id) } catch { inner.append(error) }
            do throws(SwitchError) { try sw.enable(RecordingExtension("late", .capture)) } catch { inner.append(error) }
        }
        try es.sw.enable(ext)
        let id = try es.sw.createPort(name: "outer", type: .synthetic)
        #expect(inner.map(\.code) == [.invalidState, .invalidState, .invalidState])
        #expect(inner.allSatisfy { $0.message.contains("re-entrant") })
        #expect(es.sw.ports.map(\.name) == ["outer"])
        #expect(es.sw.port(id)?.state == .created)
        #expect(es.sw.extensions.map(\.name) == ["rec"])

        // Also from attached(to:).
        let late = RecordingExtension("late2", .capture)
        var attachError: SwitchError?
        late.onAttached = { sw in
            do throws(SwitchError) { try sw.createPort(name: "from-attach", type: .synthetic) } catch { attachError = error }
        }
        try es.sw.enable(late)
        #expect(attachError?.code == .invalidState)
        #expect(es.sw.port(named: "from-attach") == nil)
    }
}
