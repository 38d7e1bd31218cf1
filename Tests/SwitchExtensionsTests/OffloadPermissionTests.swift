import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

/// A fast path in memory that keeps what the switch installed (the XDP maps' stand-in).
final class CachingDatapath: OffloadDatapath {
    var entries: [OffloadFlow: OffloadTarget] = [:]
    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool {
        entries[flow] = target
        return true
    }
    func remove(_ flow: OffloadFlow) { entries[flow] = nil }
    func lastUse(_ flow: OffloadFlow) -> UInt64? { entries[flow] == nil ? nil : 0 }
    func counters(portIndex: Int) -> FastPathCounters { FastPathCounters() }
    func touching(_ port: PortID) -> Int { entries.filter { $0.key.ingress == port || $0.value.egress == port }.count }
}

@Suite("Offload permission of the shipped extensions")
struct OffloadPermissionTests {
    /// The shipped default stack with a fast path on every port, three VM ports that know each
    /// other, and a → b and b → a cached.
    func offloading() throws -> (EmbeddedSwitch, CachingDatapath, [PortID]) {
        let es = try policySwitch()
        let dp = CachingDatapath()
        es.sw.setOffloadDatapath(dp)
        var ports: [PortID] = []
        for (i, name) in ["a", "b", "c"].enumerated() {
            let p = try es.addPort(name, mac: mac(UInt8(i + 1)))
            es.sw.setOffloadSupport(p, unsupportedReason: nil)
            ports.append(p)
        }
        for (i, p) in ports.enumerated() { es.learn(p, mac(UInt8(i + 1))) }
        es.send(from: ports[0], Build.plain(mac(2), mac(1)))
        es.send(from: ports[1], Build.plain(mac(1), mac(2)))
        es.takeAll()
        return (es, dp, ports)
    }

    @Test("With every shipped extension at its defaults, learned unicast between VM ports is offloaded on every port")
    func defaultStackOffloads() throws {
        let (es, dp, ports) = try offloading()
        for p in ports { #expect(es.sw.offloadStatus(of: p) == .allowed, "\(es.sw.offloadStatus(of: p)!)") }
        #expect(dp.entries.count == 2)
        #expect(dp.touching(ports[0]) == 2)
    }

    @Test("A spoofed source is never cached: the guard drops it on the slow path, as every later one")
    func spoofNotCached() throws {
        let (es, dp, ports) = try offloading()
        for _ in 0..<3 { es.send(from: ports[0], Build.plain(mac(2), mac(3))) }  // a claims c's MAC
        #expect(es.take(ports[1]).isEmpty)
        #expect(es.dropped(ports[0], "MAC spoofing") == 3)
        #expect(!dp.entries.keys.contains { $0.ingress == ports[0] && $0.source == mac(3) })
        #expect(dp.entries.count == 2)
    }

    @Test("A NIC's new MAC takes its port's entries out before NIC_UPDATED returns")
    func nicUpdated() throws {
        let (es, dp, ports) = try offloading()
        try es.sw.updateNIC(on: ports[0], currentMAC: mac(0x21), permanentMAC: mac(0x21))
        #expect(dp.touching(ports[0]) == 0)
        // mac(1) is no longer a's: its frames are dropped by the guard, and nothing is cached.
        es.send(from: ports[0], Build.plain(mac(2), mac(1)))
        #expect(es.take(ports[1]).isEmpty)
        #expect(dp.touching(ports[0]) == 0)
    }

    /// Each setting: whether the port must then stay on the slow path (with the reason shown), and
    /// in every case the port's entries are gone when the property request returns.
    @Test("Each port setting is re-evaluated: entries go before the change returns; only per-frame policies keep the slow path",
          arguments: [
              ("acl=direction=in proto=tcp dst-port=22 action=deny", "acl: port ACL"),
              ("acl-default-out=deny", "acl: port ACL"),
              ("ingress-rate=100mbit", "policer: polices this port"),
              ("egress-frame-rate=1000", "policer: polices this port"),
              ("ip-guard=on", "ip-guard: checks IP, ARP and ND source addresses"),
              ("dhcp-guard=on", nil),
              ("router-guard=on", nil),
              ("storm-broadcast=100", nil),
              ("storm-unknown=10", nil),
              ("mac-limit=4", nil),
              ("isolated=on", nil),
              ("allowed-macs=02:00:00:00:00:30", nil),
              ("mac-spoof-guard=off", nil),
          ] as [(String, String?)])
    func settingReevaluated(_ setting: String, _ reason: String?) throws {
        let (es, dp, ports) = try offloading()
        try es.set(ports[0], setting)
        #expect(dp.touching(ports[0]) == 0, "\(setting): entries left")
        #expect(dp.entries.isEmpty)
        let expected: OffloadPermission = reason.map { .mustSeeEveryFrame(reason: $0) } ?? .allowed
        #expect(es.sw.offloadStatus(of: ports[0]) == expected)
        #expect(es.sw.offloadStatus(of: ports[1]) == .allowed)
        // Back to the defaults: the port may take the fast path again.
        try es.apply(PortSettings(), to: ports[0])
        #expect(es.sw.offloadStatus(of: ports[0]) == .allowed)
    }

    @Test("dhcp-guard and router-guard are compiled into the fast path: a guarded port's entries carry their checks")
    func guardsCompiled() throws {
        let (es, dp, ports) = try offloading()
        try es.set(ports[0], "dhcp-guard=on", "router-guard=on")
        #expect(es.sw.offloadStatus(of: ports[0]) == .allowed)
        #expect(es.sw.offloadChecks(of: ports[0]) == [.dhcpServer, .routerMessages])
        #expect(es.sw.offloadChecks(of: ports[1]) == [])
        es.send(from: ports[0], Build.plain(mac(2), mac(1)))
        es.send(from: ports[1], Build.plain(mac(1), mac(2)))
        #expect(dp.entries.count == 2)
        #expect(dp.entries.first { $0.key.ingress == ports[0] }?.value.checks == [.dhcpServer, .routerMessages])
        #expect(dp.entries.first { $0.key.ingress == ports[1] }?.value.checks == [])
        es.takeAll()
        // The slow path still drops what the checks send it: a DHCP offer from the guarded port.
        es.send(from: ports[0], Build.udp4(mac(2), mac(1), from: ip4(10, 0, 0, 1), to: ip4(10, 0, 0, 2), ports: (67, 68),
                                           Build.dhcp(op: 2, type: 2, chaddr: mac(2))))
        #expect(es.take(ports[1]).isEmpty)
        #expect(es.dropped(ports[0], "DHCP server message") == 1)
        try es.set(ports[0], "dhcp-guard=off")
        #expect(es.sw.offloadChecks(of: ports[0]) == [.routerMessages])
        #expect(dp.touching(ports[0]) == 0)
    }

    @Test("Isolation is decided when an entry is installed: an excluded pair is never cached")
    func isolationNotCached() throws {
        let (es, dp, ports) = try offloading()
        try es.set(ports[0], "isolated=on")
        es.send(from: ports[0], Build.plain(mac(3), mac(1)))
        #expect(es.take(ports[2]).isEmpty)
        #expect(dp.entries.isEmpty)
        es.send(from: ports[1], Build.plain(mac(3), mac(2)))  // positive control: ordinary b → c
        #expect(es.take(ports[2]).count == 1)
        #expect(dp.entries.count == 1)
    }
}
