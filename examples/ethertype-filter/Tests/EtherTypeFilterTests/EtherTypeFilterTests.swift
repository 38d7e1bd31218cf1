import EmbeddedSwitch
import EtherTypeFilter
import TapswitchKit
import Testing

private let lldp: UInt16 = 0x88CC

private func mac(_ n: UInt8) -> MACAddress { MACAddress(0x02, 0, 0, 0, 0, n) }

/// Two VM ports on an in-memory switch with the filter enabled; `blocked` is its setting.
private func filterSwitch(blocked: String) throws -> (EmbeddedSwitch, vm: PortID, peer: PortID) {
    let es = EmbeddedSwitch()
    try es.sw.enable(EtherTypeFilter(settings: ExtensionSettings(["blocked": blocked])))
    let vm = try es.addPort("vm", mac: mac(1))
    let peer = try es.addPort("peer", mac: mac(2))
    return (es, vm, peer)
}

private func etherType(_ frame: [UInt8]) -> UInt16 { UInt16(frame[12]) << 8 | UInt16(frame[13]) }

@Suite("ethertype-filter")
struct EtherTypeFilterTests {
    @Test("A blocked EtherType is dropped with its reason and counted; other types in the same batch pass")
    func dropsBlocked() throws {
        let (es, vm, peer) = try filterSwitch(blocked: "0x88cc, 0x86dd")
        es.send(from: vm, [TestFrame.ethernet(dst: .broadcast, src: mac(1), type: lldp),
                           TestFrame.ipv4(dst: .broadcast, src: mac(1)),
                           TestFrame.ipv6(dst: .broadcast, src: mac(1)),
                           TestFrame.arpRequest(src: mac(1), senderIP: 0x0A00_0001, targetIP: 0x0A00_0002),
                           TestFrame.ethernet(dst: .broadcast, src: mac(1), type: lldp)])
        // Positive control: IPv4 and ARP reach the peer, in order.
        #expect(es.take(peer).map(etherType) == [0x0800, 0x0806])
        let drops = es.sw.counters(of: vm)?.drops ?? [:]
        #expect(drops[.init(direction: .ingress, reason: "EtherType 0x88cc blocked (ethertype-filter)", reporter: "ethertype-filter")] == 2)
        #expect(drops[.init(direction: .ingress, reason: "EtherType 0x86dd blocked (ethertype-filter)", reporter: "ethertype-filter")] == 1)
        #expect(es.drops.filter { $0.reporter == "ethertype-filter" && $0.port == vm }.count == 3)
        let counters = es.sw.extensions.first { $0.name == "ethertype-filter" }?.counters ?? []
        #expect(counters.map(\.name) == ["dropped", "dropped-0x88cc", "dropped-0x86dd"])
        #expect(counters.map(\.value) == [3, 2, 1])
    }

    @Test("Frames from every port are filtered, and a header-only frame of a blocked type too")
    func everyPort() throws {
        let (es, vm, peer) = try filterSwitch(blocked: "35020")   // decimal 0x88cc
        es.send(from: peer, Array(TestFrame.ethernet(dst: .broadcast, src: mac(2), type: lldp).prefix(14)))
        es.send(from: peer, TestFrame.ethernet(dst: .broadcast, src: mac(2), type: 0x88B5))
        #expect(es.take(vm).map(etherType) == [0x88B5])
        #expect(es.sw.counters(of: peer)?.drops.values.reduce(0, +) == 1)
    }

    @Test("Nothing blocked: everything passes; disabled: the next frame passes")
    func nothingBlockedAndDisable() throws {
        let (es, vm, peer) = try filterSwitch(blocked: "")
        es.send(from: vm, TestFrame.ethernet(dst: .broadcast, src: mac(1), type: lldp))
        #expect(es.take(peer).count == 1)

        let (es2, vm2, peer2) = try filterSwitch(blocked: "0x88cc")
        es2.send(from: vm2, TestFrame.ethernet(dst: .broadcast, src: mac(1), type: lldp))
        #expect(es2.take(peer2).isEmpty)
        try es2.sw.disable("ethertype-filter")
        es2.send(from: vm2, TestFrame.ethernet(dst: .broadcast, src: mac(1), type: lldp))
        #expect(es2.take(peer2).count == 1)
    }

    @Test("Settings: unknown keys and values that are not EtherTypes are refused, naming them")
    func settings() throws {
        #expect(try EtherTypeFilter(settings: ExtensionSettings(["blocked": "0x88CC,2054,0x88cc"])).blocked == [0x88CC, 0x0806])
        for (values, needle) in [(["block": "0x88cc"], "unknown setting 'block'"),
                                 (["blocked": "0x05dc"], "'0x05dc' is not an EtherType"),
                                 (["blocked": "ipv6"], "'ipv6' is not an EtherType"),
                                 (["blocked": "0x88cc,,0x0800"], "'' is not an EtherType"),
                                 (["blocked": "0x10000"], "'0x10000' is not an EtherType")] {
            do throws(SwitchError) {
                _ = try EtherTypeFilter(settings: ExtensionSettings(values))
                Issue.record("accepted \(values)")
            } catch {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains(needle), "\(error.message)")
            }
        }
    }

    @Test("The registry entry joins the shipped extensions; a taken name is refused")
    func registry() throws {
        let registry = try TapswitchDaemonMain.registry(adding: [EtherTypeFilter.registryEntry])
        #expect(registry.names == ExtensionRegistry.builtin.names + ["ethertype-filter"])
        #expect(registry.entry(named: "ethertype-filter")?.extensionClass == .filtering)
        #expect(throws: SwitchError.self) { try TapswitchDaemonMain.registry(adding: [EtherTypeFilter.registryEntry, EtherTypeFilter.registryEntry]) }
    }
}
