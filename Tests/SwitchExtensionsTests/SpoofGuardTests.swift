import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

/// Records every control request and can veto the ones chosen by the test.
final class Vetoer: SwitchExtension {
    let name: String
    let extensionClass = ExtensionClass.filtering
    var vetoes: Set<OIDRequest.Kind> = []
    init(_ name: String = "vetoer") { self.name = name }
    func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        vetoes.contains(request.kind) ? .veto(reason: "policy frozen") : .accept
    }
}

@Suite("MAC spoofing guard")
struct SpoofGuardTests {
    @Test("On by default for VM ports: spoofed frames are dropped and counted, the victim still receives all its frames")
    func spoofAttempt() throws {
        let es = try policySwitch()
        let attacker = try es.addPort("attacker", mac: mac(1))
        let victim = try es.addPort("victim", mac: mac(2))
        let sender = try es.addPort("sender", mac: mac(3))
        es.learn(victim, mac(2))
        for k in 0..<40 {
            es.send(from: attacker, Build.plain(mac(3), mac(2), tag: 0xEE))   // claims the victim's MAC
            es.send(from: sender, Build.plain(mac(2), mac(3), tag: UInt8(k)))
        }
        #expect(es.take(victim).count == 40)
        #expect(es.take(attacker).isEmpty)
        #expect(es.take(sender).isEmpty, "no spoofed frame got through")
        #expect(es.dropped(attacker, "MAC spoofing") == 40)
        #expect(es.counter("mac-spoof-guard", "dropped") == 40)
        #expect(es.sw.macEntries().filter { $0.mac == mac(2) }.map(\.port) == [victim])
        // Positive control: the attacker's own MAC passes.
        es.send(from: attacker, Build.plain(mac(3), mac(1)))
        #expect(es.take(sender).count == 1)
    }

    @Test("allowed-macs adds addresses; mac-spoof-guard=off lets any pass, but the victim's MAC stays pinned to it")
    func allowedAndOff() throws {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(2))
        try es.set(a, "allowed-macs=02:00:00:00:00:10")
        es.send(from: a, [Build.plain(.broadcast, mac(0x10)), Build.plain(.broadcast, mac(0x11))])
        #expect(es.take(c).count == 1)
        try es.set(a, "mac-spoof-guard=off")
        es.send(from: a, [Build.plain(.broadcast, mac(0x11)), Build.plain(mac(3), mac(2))])
        #expect(es.take(c).count == 2)
        es.takeAll()
        es.send(from: c, Build.plain(mac(2), mac(3)))
        #expect(es.take(b).count == 1, "b's address did not move to a")
        #expect(es.take(a).isEmpty)
    }

    @Test("allowed-macs naming another port's NIC MAC is vetoed by the guard; the old settings stay")
    func vetoOtherPortsMAC() throws {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        try es.set(a, "allowed-macs=02:00:00:00:00:10")
        let error = #expect(throws: SwitchError.self) { try es.set(a, "allowed-macs=02:00:00:00:00:10,02:00:00:00:00:02") }
        #expect(error?.vetoingExtension == "mac-spoof-guard")
        #expect(error?.vetoReason == "allowed-macs: 02:00:00:00:00:02 is the MAC of port b")
        #expect(PortSettings(properties: es.sw.properties(of: a)).security.allowedMACs == [mac(0x10)])
        es.send(from: a, Build.plain(.broadcast, mac(2)))
        #expect(es.take(b).isEmpty)
        // A change of VLAN and security together: the VLAN part is undone when the security part is vetoed.
        #expect(throws: SwitchError.self) { try es.set(a, "vlan=20", "allowed-macs=02:00:00:00:00:02") }
        #expect(es.sw.properties(of: a).contains { if case .vlan = $0 { true } else { false } } == false)
        es.send(from: a, Build.plain(.broadcast, mac(1)))
        #expect(es.take(b).count == 1, "still in the untagged domain with b")
    }

    @Test("Internal and external ports are not guarded unless set; the extension's vm-default setting turns the default off")
    func defaults() throws {
        let es = try policySwitch()
        let host = try es.addPort("host", mac: mac(1), type: .internal)
        let vm = try es.addPort("vm", mac: mac(2))
        es.send(from: host, Build.plain(.broadcast, mac(0x20)))
        #expect(es.take(vm).count == 1)
        try es.set(host, "mac-spoof-guard=on")
        es.send(from: host, Build.plain(.broadcast, mac(0x20)))
        #expect(es.take(vm).isEmpty)

        let relaxed = EmbeddedSwitch()
        try relaxed.sw.enable(ExtensionRegistry.builtin.make("mac-spoof-guard", settings: ExtensionSettings(["vm-default": "off"])))
        let p = try relaxed.addPort("p", mac: mac(1))
        let q = try relaxed.addPort("q", mac: mac(2))
        relaxed.send(from: p, Build.plain(.broadcast, mac(0x30)))
        #expect(relaxed.take(q).count == 1)
    }

    @Test("A vetoed property change keeps the old value in force, whether vetoed above or below the guard")
    func vetoKeepsOldValue() throws {
        let es = try policySwitch()
        let below = Vetoer("below")
        try es.sw.enable(below)  // bottom of the filtering band: sees the request after the guard
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        below.vetoes = [.propertyAdd]
        #expect(throws: SwitchError.self) { try es.set(a, "mac-spoof-guard=off") }
        es.send(from: a, Build.plain(.broadcast, mac(0x40)))
        #expect(es.take(b).isEmpty, "the guard did not apply the vetoed change")
        below.vetoes = []
        try es.set(a, "allowed-macs=02:00:00:00:00:40")
        below.vetoes = [.propertyUpdate]
        let error = #expect(throws: SwitchError.self) { try es.set(a, "allowed-macs=02:00:00:00:00:41") }
        #expect(error?.vetoingExtension == "below")
        es.send(from: a, [Build.plain(.broadcast, mac(0x40)), Build.plain(.broadcast, mac(0x41))])
        #expect(es.take(b) == [Build.plain(.broadcast, mac(0x40))])

        let above = Vetoer("above")
        try es.sw.enable(above, position: 0)
        above.vetoes = [.propertyDelete]
        #expect(throws: SwitchError.self) { try es.sw.deleteProperty(.security, from: a) }
        es.send(from: a, Build.plain(.broadcast, mac(0x40)))
        #expect(es.take(b).count == 1)
    }

    @Test("Enabled on a running switch it enumerates the ports; disabled it stops at the next frame")
    func enableLateAndDisable() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        try es.sw.enable(ExtensionRegistry.builtin.make("mac-spoof-guard"))
        es.send(from: a, [Build.plain(.broadcast, mac(0x50)), Build.plain(.broadcast, mac(1))])
        #expect(es.take(b).count == 1)
        try es.sw.disable("mac-spoof-guard")
        es.send(from: a, Build.plain(.broadcast, mac(0x50)))
        #expect(es.take(b).count == 1)
    }
}

@Suite("MAC limit")
struct MACLimitTests {
    @Test("mac-limit=N: frames from further MACs are dropped; raising it at run time lets them in, lowering it flushes")
    func limit() throws {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        try es.set(a, "mac-spoof-guard=off", "mac-limit=2")
        es.send(from: a, [Build.plain(.broadcast, mac(0x61))])
        es.send(from: a, [Build.plain(.broadcast, mac(0x62))])
        es.send(from: a, [Build.plain(.broadcast, mac(0x63)), Build.plain(.broadcast, mac(0x61))])
        #expect(es.take(b).count == 3)
        #expect(es.dropped(a, "MAC limit") == 1)
        #expect(es.counter("mac-limit", "dropped") == 1)
        try es.set(a, "mac-limit=3")
        es.send(from: a, Build.plain(.broadcast, mac(0x63)))
        #expect(es.take(b).count == 1)
        #expect(es.sw.macTable.entries(onSlot: UInt16(es.sw.portIndex(of: a)!)) == 3)
        try es.set(a, "mac-limit=1")
        #expect(es.sw.macTable.entries(onSlot: UInt16(es.sw.portIndex(of: a)!)) == 0)
        es.send(from: a, [Build.plain(.broadcast, mac(0x61))])
        es.send(from: a, [Build.plain(.broadcast, mac(0x62))])
        #expect(es.take(b).count == 1)
        try es.sw.disable("mac-limit")
        es.send(from: a, Build.plain(.broadcast, mac(0x62)))
        #expect(es.take(b).count == 1, "disabled: the limit is gone at once")
    }
}
