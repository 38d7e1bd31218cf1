import ControlProtocol
import FakeDevices
import Foundation
import Logging
import StateStore
import Testing
@testable import SwitchService

/// The shared vocabulary (SwitchTypes) on the wire: every type's JSON form is the one the control
/// protocol always used, decodes back to the same value, and an unknown value is an error naming
/// the field. Error codes travel from the daemon's service to the client unchanged.
@Suite("Wire vocabulary")
struct WireVocabularyTests {
    /// `value` encodes to `json` exactly (as a one-element array, so scalars are valid documents)
    /// and decodes back to `value`.
    func roundTrip<T: Codable & Equatable>(_ value: T, _ json: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let data = try Wire.makeEncoder().encode([value])
        #expect(String(decoding: data, as: UTF8.self) == "[\(json)]", sourceLocation: sourceLocation)
        #expect(try Wire.makeDecoder().decode([T].self, from: data) == [value], sourceLocation: sourceLocation)
    }

    @Test("identifiers, MAC and every enum keep their wire names")
    func enums() throws {
        try roundTrip(PortID(7), "7")
        try roundTrip(MACAddress(0x52, 0x54, 0x00, 0xAB, 0x0C, 0x01), #""52:54:00:ab:0c:01""#)
        for (t, name) in [(PortType.external, "external"), (.internal, "internal"), (.synthetic, "synthetic"), (.emulated, "emulated")] {
            try roundTrip(t, "\"\(name)\"")
        }
        for (s, name) in [(PortState.created, "created"), (.tearingDown, "teardown"), (.deleted, "deleted")] {
            try roundTrip(s, "\"\(name)\"")
        }
        for s in NICState.allCases { try roundTrip(s, "\"\(s.rawValue)\"") }
        #expect(NICState.allCases.map(\.rawValue) == ["created", "connected", "disconnected", "deleted"])
        for c in ExtensionClass.allCases { try roundTrip(c, "\"\(c.rawValue)\"") }
        #expect(ExtensionClass.allCases.map(\.rawValue) == ["capture", "filtering", "forwarding"])
        for u in UnknownUnicastPolicy.allCases { try roundTrip(u, "\"\(u.rawValue)\"") }
        #expect(UnknownUnicastPolicy.allCases.map(\.rawValue) == ["flood", "uplink"])
        try roundTrip(Direction.ingress, #""ingress""#)
        try roundTrip(Direction.egress, #""egress""#)
        for k in EventKind.allCases { try roundTrip(k, "\"\(k.rawValue)\"") }
        #expect(EventKind.allCases.map(\.rawValue) == ["port-create", "nic-create", "nic-connect", "nic-disconnect", "nic-delete",
                                                       "port-teardown", "port-delete", "nic-updated", "port-updated", "port-property", "veto", "nic-held",
                                                       "mirror-add", "mirror-del"])
        for c in SwitchError.Code.allCases { try roundTrip(c, "\"\(c.rawValue)\"") }
    }

    @Test("counters and VLAN policies round-trip in their documented JSON form")
    func structured() throws {
        var counters = PortCounters(framesIn: 1, bytesIn: 64, framesOut: 2, bytesOut: 128)
        counters.drops[.init(direction: .egress, reason: "transmit queue full", reporter: "core:delivery")] = 3
        counters.drops[.init(direction: .ingress, reason: "runt frame", reporter: "core:admission")] = 4
        try roundTrip(counters, #"{"bytesIn":64,"bytesOut":128,"drops":[{"direction":"ingress","frames":4,"reason":"runt frame","reporter":"core:admission"},"#
                      + #"{"direction":"egress","frames":3,"reason":"transmit queue full","reporter":"core:delivery"}],"framesIn":1,"framesOut":2}"#)
        try roundTrip(VLANPolicy.access(10), #"{"mode":"access","vlan":10}"#)
        try roundTrip(VLANPolicy.trunk(allowed: [30, 10, 20], native: 1), #"{"allowed":[10,20,30],"mode":"trunk","native":1}"#)
        try roundTrip(VLANPolicy.trunk(allowed: [], native: nil), #"{"allowed":[],"mode":"trunk"}"#)
    }

    @Test("an extension's JSON keeps its names ('class') and carries its counters; older daemons' lack of counters decodes")
    func extensionInfo() throws {
        let info = ExtensionInfo(name: "mac-spoof-guard", extensionClass: .filtering, position: 1, summary: "drops spoofed frames",
                                 counters: [ExtensionCounter("dropped", 3), ExtensionCounter("allowed", 7)])
        try roundTrip(info, #"{"class":"filtering","counters":[{"name":"dropped","value":3},{"name":"allowed","value":7}],"#
                      + #""enabled":true,"name":"mac-spoof-guard","position":1,"summary":"drops spoofed frames"}"#)
        try roundTrip(ExtensionInfo(name: "x", extensionClass: .capture, enabled: false, position: nil),
                      #"{"class":"capture","counters":[],"enabled":false,"name":"x"}"#)
        let old = try Wire.makeDecoder().decode(ExtensionInfo.self, from: Data(#"{"name":"x","class":"capture","enabled":false}"#.utf8))
        #expect(old == ExtensionInfo(name: "x", extensionClass: .capture, enabled: false, position: nil))
    }

    @Test("a port's whole VLAN policy is on the wire; access ports keep the old 'vlan' field")
    func portVLAN() throws {
        let access = PortInfo(id: PortID(3), name: "web1-0", friendlyName: "web1/web1-0", type: .synthetic, state: .created,
                              vlanPolicy: .access(20))
        let trunk = PortInfo(id: PortID(4), name: "eth1", friendlyName: "", type: .external, state: .created,
                             vlanPolicy: .trunk(allowed: [10, 20], native: 1))
        let json = String(decoding: try Wire.makeEncoder().encode([access, trunk]), as: UTF8.self)
        #expect(json.contains(#""vlan":20,"vlanPolicy":{"mode":"access","vlan":20}"#), "\(json)")
        #expect(json.contains(#""vlanPolicy":{"allowed":[10,20],"mode":"trunk","native":1}"#), "\(json)")
        let back = try Wire.makeDecoder().decode([PortInfo].self, from: Data(json.utf8))
        #expect(back == [access, trunk])
        #expect(back[0].vlan == 20 && back[1].vlan == nil)
        var changed = back[0]
        changed.vlanPolicy = .trunk(allowed: [20], native: nil)
        #expect(changed.vlan == nil, "the compatibility field follows the policy")
        changed.vlanPolicy = .access(30)
        #expect(changed.vlan == 30)
    }

    @Test("an unknown value in a response is a decode error naming the field and the accepted values", arguments: [
        (#"{"ok":false,"error":"x","code":"exploded"}"#, "code", "unknown error code 'exploded'"),
        (#"{"ok":true,"ports":[{"id":1,"name":"a","friendlyName":"","type":"bogus","state":"created","counters":{"framesIn":0,"bytesIn":0,"framesOut":0,"bytesOut":0,"drops":[]}}]}"#,
         "ports[0].type", "unknown port type 'bogus' (expected one of: external, internal, synthetic, emulated)"),
        (#"{"ok":true,"ports":[{"id":1,"name":"a","friendlyName":"","type":"internal","state":"gone","counters":{"framesIn":0,"bytesIn":0,"framesOut":0,"bytesOut":0,"drops":[]}}]}"#,
         "ports[0].state", "unknown port state 'gone'"),
        (#"{"ok":true,"ports":[{"id":1,"name":"a","friendlyName":"","type":"internal","state":"created","counters":{"framesIn":0,"bytesIn":0,"framesOut":0,"bytesOut":0,"drops":[{"direction":"sideways","reason":"r","frames":1}]}}]}"#,
         "ports[0].counters.drops[0].direction", "unknown direction 'sideways' (expected one of: ingress, egress)"),
        (#"{"ok":true,"ports":[{"id":1,"name":"a","friendlyName":"","type":"internal","state":"created","vlanPolicy":{"mode":"hybrid"},"counters":{"framesIn":0,"bytesIn":0,"framesOut":0,"bytesOut":0,"drops":[]}}]}"#,
         "ports[0].vlanPolicy.mode", "unknown VLAN mode 'hybrid' (expected one of: access, trunk, untagged)"),
        (#"{"ok":true,"ports":[{"id":1,"name":"a","friendlyName":"","type":"internal","state":"created","vlanPolicy":{"mode":"trunk","allowed":[10,5000]},"counters":{"framesIn":0,"bytesIn":0,"framesOut":0,"bytesOut":0,"drops":[]}}]}"#,
         "ports[0].vlanPolicy.allowed[1]", "VLAN 5000 is out of range 1..4094"),
        (#"{"ok":true,"fdb":[{"mac":"52:54:00:zz:00:01","portId":1,"portName":"a","ageSeconds":0,"isStatic":false}]}"#,
         "fdb[0].mac", "'52:54:00:zz:00:01' is not a MAC address"),
        (#"{"ok":true,"extensions":[{"name":"x","class":"shaping","enabled":false}]}"#,
         "extensions[0].class", "unknown extension class 'shaping'"),
        (#"{"ok":true,"event":{"seq":1,"time":"2026-11-24T19:36:00.123Z","kind":"port-exploded","portId":1,"portName":"a","restore":false}}"#,
         "event.kind", "unknown event kind 'port-exploded'"),
    ])
    func unknownValues(json: String, field: String, message: String) throws {
        do {
            let r = try Wire.decodeResponse(Data(json.utf8))
            Issue.record("decoded \(r) from \(json)")
        } catch {
            #expect(error.field == field)
            #expect(error.message.hasPrefix(message), "\(error.message)")
        }
    }

    @Test("a response that is not JSON says so")
    func notJSON() {
        #expect(throws: FieldError(field: "", message: "response is not valid JSON")) { try Wire.decodeResponse(Data("ok".utf8)) }
    }

    @Test("an unknown value in a request names the field too")
    func unknownRequestValue() throws {
        let json = #"{"op":"vm-start","vm":{"name":"w","nics":[{"tap":"w0","type":"internal"}]}}"#
        #expect(throws: FieldError(field: "vm.nics[0].type", message: "'internal' is not a NIC type (expected one of: synthetic, emulated)")) {
            try Wire.decodeRequest(Data(json.utf8))
        }
    }

    @Test("a failed response carries the error's code, veto and message, and the client gets the same SwitchError back")
    func errorOnTheWire() throws {
        let veto = SwitchError.vetoed(extension: "duplicate-mac-guard", reason: "MAC 52:54:00:00:00:01 is already in use")
        let line = Wire.encodeLine(ControlResponse.failure(veto))
        #expect(String(decoding: line, as: UTF8.self)
            == #"{"code":"vetoed","error":"vetoed by extension 'duplicate-mac-guard': MAC 52:54:00:00:00:01 is already in use","ok":false,"#
            + #""vetoReason":"MAC 52:54:00:00:00:01 is already in use","vetoingExtension":"duplicate-mac-guard"}"# + "\n")
        #expect(try Wire.decodeResponse(line.dropLast()).switchError == veto)
        for code in SwitchError.Code.allCases {
            let e = SwitchError(code, "failed with \(code)")
            #expect(try Wire.decodeResponse(Wire.encodeLine(ControlResponse.failure(e)).dropLast()).switchError == e)
        }
        #expect(try Wire.decodeResponse(Wire.encodeLine(ControlResponse()).dropLast()).switchError == nil)
    }

    @Test("context() prefixes the message and keeps code, veto and cause")
    func errorContext() {
        struct Cause: Error, CustomStringConvertible { var description: String { "EBUSY" } }
        let e = SwitchError(.vetoed, "no", vetoingExtension: "g", vetoReason: "why", cause: Cause()).context("VM 'a' was not started")
        #expect(e.code == .vetoed && e.message == "VM 'a' was not started: no")
        #expect(e.vetoingExtension == "g" && e.vetoReason == "why" && e.cause is Cause)
    }

    @Test("error codes survive daemon service -> wire -> client: exists, notFound, vetoed, invalidState")
    func codesFromTheService() async throws {
        let dir = try TempDir("tswvocab")
        defer { dir.remove() }
        let backend = DataPlaneBackend(devices: FakeDeviceLayer())
        try await backend.configure(SwitchSettings(), extensions: ["duplicate-mac-guard"])
        defer { Task { await backend.shutdown() } }
        let service = ControlService(backend: backend, store: StateStore(directory: dir.file("state")), records: StateRecords(),
                                     logger: Logger(label: "test"))
        /// What the client reads for `request`: the service's answer, sent as a line and decoded.
        func client(_ request: ControlRequest) async throws -> SwitchError? {
            let line = Wire.encodeLine(await service.handle(request))
            return try Wire.decodeResponse(line.dropLast()).switchError
        }
        let nic = NICSpec(tap: "v0", mac: MACAddress("52:54:00:00:00:01"))
        #expect(try await client(.vmStart(VMSpec(name: "v", nics: [nic]))) == nil)
        #expect(try await client(.vmStart(VMSpec(name: "v", nics: [NICSpec(tap: "v9")])))?.code == .exists)
        let vetoed = try await client(.vmStart(VMSpec(name: "w", nics: [NICSpec(tap: "w0", mac: nic.mac)])))
        #expect(vetoed?.code == .vetoed && vetoed?.vetoingExtension == "duplicate-mac-guard", "\(String(describing: vetoed))")
        #expect(try await client(.vmStop(name: "nosuch"))?.code == .notFound)
        #expect(try await client(.portRemove(name: "nosuch0"))?.code == .notFound)
        #expect(try await client(.portRemove(name: "v0"))?.code == .invalidState)
        #expect(try await client(.vmStop(name: "v")) == nil)
    }
}
