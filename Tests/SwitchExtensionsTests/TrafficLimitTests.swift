import EmbeddedSwitch
import SwitchCore
import SwitchExtensions
import Testing

@Suite("Storm control and policing")
struct TrafficLimitTests {
    let vmA = mac(0x0A), vmB = mac(0x0B), vmC = mac(0x0C)

    func three() throws -> (EmbeddedSwitch, PortID, PortID, PortID) {
        let es = try policySwitch()
        let a = try es.addPort("a", mac: vmA), b = try es.addPort("b", mac: vmB), c = try es.addPort("c", mac: vmC)
        es.learn(a, vmA)
        es.learn(b, vmB)
        es.learn(c, vmC)
        return (es, a, b, c)
    }

    /// Sends `n` copies of `frame` from `port` in batches of 32; returns how many `to` received.
    func burst(_ es: EmbeddedSwitch, from port: PortID, _ frame: [UInt8], _ n: Int, to: PortID) -> Int {
        var left = n, got = 0
        while left > 0 {
            let k = min(left, 32)
            es.send(from: port, Array(repeating: frame, count: k))
            got += es.take(to).count
            left -= k
        }
        return got
    }

    @Test("Settings parse, print back and name the key on errors")
    func settings() throws {
        let s = try PortSettings.parse(["storm-broadcast=1000", "ingress-rate=100mbit", "ingress-burst=64kb", "egress-frame-rate=5000",
                                        "egress-rate=1500000", "egress-burst=1mib"])
        #expect(s.limits.ingress.rate == 100_000_000 && s.limits.ingress.burst == 64_000 && s.limits.egress.burst == 1 << 20)
        #expect(s.assignments == ["storm-broadcast=1000", "ingress-rate=100mbit", "ingress-burst=64000", "egress-rate=1500kbit",
                                  "egress-burst=1048576", "egress-frame-rate=5000"])
        #expect(try PortSettings.parse(s.assignments) == s)
        #expect(PortSettings(properties: s.properties) == s)
        func error(_ w: String...) -> String? {
            do { _ = try PortSettings.parse(w); return nil } catch { return error.message }
        }
        #expect(error("ingress-rate=fast") == "ingress-rate=fast: expected a rate like 100mbit, 1gbit or 500kbit (8kbit to 1tbit), or none")
        #expect(error("ingress-rate=1bit") != nil)
        #expect(error("ingress-burst=64kb") == "ingress-burst needs ingress-rate")
        #expect(error("egress-frame-burst=10") == "egress-frame-burst needs egress-frame-rate")
        #expect(error("storm-broadcast=0") == "storm-broadcast=0: expected frames per second, 1-1000000000, or none")
        #expect(error("ingress-rate=1mbit", "ingress-burst=100") == "ingress-burst=100: expected a size like 64kb, 1mb or 100000 (bytes, 1514 to 4 GiB), or none")
        var r = s
        try r.reset(["ingress-rate", "ingress-burst", "storm-broadcast"])
        #expect(r.limits.ingress.rate == nil && r.limits.stormBroadcast == nil && r.limits.egress.frameRate == 5000)
    }

    @Test("storm-broadcast: at most N broadcasts per second from the port; others' traffic and unicast unaffected")
    func broadcastStorm() throws {
        let (es, a, b, c) = try three()
        es.sw.clockNanoseconds = 5_000_000_000
        try es.set(a, "storm-broadcast=50")
        let bcast = Build.plain(.broadcast, vmA)
        #expect(burst(es, from: a, bcast, 200, to: b) == 50)
        #expect(es.dropped(a, "broadcast storm limit") == 150)
        // Unicast from the storming port and broadcasts from another port still pass.
        #expect(burst(es, from: a, Build.plain(vmB, vmA), 100, to: b) == 100)
        #expect(burst(es, from: c, Build.plain(.broadcast, vmC), 100, to: b) == 100)
        // The next second allows N more.
        es.sw.clockNanoseconds += 999_000_000
        #expect(burst(es, from: a, bcast, 10, to: b) == 0)
        es.sw.clockNanoseconds += 1_000_000
        #expect(burst(es, from: a, bcast, 100, to: b) == 50)
        #expect(es.counter("storm-control", "dropped-broadcast") == 210)
    }

    @Test("storm-multicast and storm-unknown count their own classes; known unicast is never limited")
    func multicastAndUnknown() throws {
        let (es, a, b, _) = try three()
        try es.set(a, "storm-multicast=10", "storm-unknown=5")
        #expect(burst(es, from: a, Build.plain(MACAddress(0x01, 0x00, 0x5E, 0, 0, 1), vmA), 40, to: b) == 10)
        #expect(burst(es, from: a, Build.plain(.broadcast, vmA), 40, to: b) == 40, "broadcast has no limit here")
        #expect(burst(es, from: a, Build.plain(mac(0x99), vmA), 40, to: b) == 5, "unknown unicast is flooded to b")
        #expect(burst(es, from: a, Build.plain(vmB, vmA), 40, to: b) == 40)
        #expect(es.dropped(a, "multicast storm limit") == 30 && es.dropped(a, "unknown-unicast storm limit") == 35)
    }

    @Test("Ingress frame-rate policer: the burst passes at once, then the rate; other ports unaffected")
    func ingressFrames() throws {
        let (es, a, b, c) = try three()
        es.sw.clockNanoseconds = 1_000_000_000
        try es.set(a, "ingress-frame-rate=1000", "ingress-frame-burst=20")
        let f = Build.plain(vmB, vmA)
        #expect(burst(es, from: a, f, 32, to: b) == 20)
        es.sw.clockNanoseconds += 10_000_000  // 10 ms: 10 frames
        #expect(burst(es, from: a, f, 32, to: b) == 10)
        #expect(burst(es, from: c, Build.plain(vmB, vmC), 64, to: b) == 64)
        #expect(es.dropped(a, "ingress rate exceeded") == 34)
    }

    @Test("Ingress bit-rate policer holds a sender at twice the rate to the rate (simulated 10 s)")
    func ingressBits() throws {
        let (es, a, b, _) = try three()
        es.sw.clockNanoseconds = 1_000_000_000
        try es.set(a, "ingress-rate=8mbit", "ingress-burst=20kb")  // 1 MB/s
        let f = Build.ethernet(vmB, vmA, type: 0x88B5, Array(repeating: 7, count: 986))  // 1000 bytes
        var delivered = 0
        for _ in 0..<10_000 {  // 2 frames per ms: 2 MB/s offered
            es.sw.clockNanoseconds += 1_000_000
            es.send(from: a, [f, f])
            delivered += es.take(b).count
        }
        // 10 s at 1 MB/s is 10,000 frames, plus the burst (20).
        #expect(delivered >= 9_990 && delivered <= 10_030, "\(delivered)")
    }

    @Test("Egress policer limits what a port receives, per destination; a superframe larger than the burst still passes on a full bucket")
    func egress() throws {
        let (es, a, b, c) = try three()
        es.sw.clockNanoseconds = 1_000_000_000
        try es.set(b, "egress-rate=800kbit", "egress-burst=3000")  // 100 kB/s
        let f = Build.ethernet(.broadcast, vmA, type: 0x88B5, Array(repeating: 7, count: 986))
        es.send(from: a, Array(repeating: f, count: 10))
        #expect(es.take(b).count == 3 && es.take(c).count == 10)
        #expect(es.dropped(b, "egress rate exceeded", .egress) == 7)
        es.sw.clockNanoseconds += 1_000_000_000
        let big = Build.ethernet(vmB, vmA, type: 0x88B5, Array(repeating: 7, count: 9000))
        es.send(from: a, [big, big])
        #expect(es.take(b).count == 1)
        // Turned off: everything passes.
        var s = PortSettings(properties: es.sw.properties(of: b))
        try s.reset(["egress-rate", "egress-burst"])
        try es.apply(s, to: b)
        es.send(from: a, Array(repeating: f, count: 10))
        #expect(es.take(b).count == 10)
        #expect(es.counter("policer", "egress-ports") == 0)
    }
}

/// A fast path that takes every entry (only the switch's bookkeeping matters here).
final class NullDatapath: OffloadDatapath {
    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool { true }
    func remove(_ flow: OffloadFlow) {}
    func lastUse(_ flow: OffloadFlow) -> UInt64? { nil }
    func counters(portIndex: Int) -> FastPathCounters { FastPathCounters() }
    func flows(from source: MACAddress) -> [OffloadFlow] { [] }
}

@Suite("ACL, storm control and policing with the fast path")
struct LimitOffloadTests {
    @Test("A port with ACL rules or a policer keeps its frames on the slow path; storm control alone does not need to")
    func offload() throws {
        let es = EmbeddedSwitch()
        for name in ["acl", "storm-control", "policer"] { try es.sw.enable(ExtensionRegistry.builtin.make(name)) }
        es.sw.setOffloadDatapath(NullDatapath())
        let a = try es.addPort("a", mac: mac(1)), b = try es.addPort("b", mac: mac(2))
        es.sw.setOffloadSupport(a, unsupportedReason: nil)
        es.sw.setOffloadSupport(b, unsupportedReason: nil)
        #expect(es.sw.offloadStatus(of: a) == .allowed && es.sw.offloadStatus(of: b) == .allowed)
        try es.set(b, "acl=direction=in proto=tcp dst-port=22 action=deny")
        #expect(es.sw.offloadStatus(of: b) == .mustSeeEveryFrame(reason: "acl: port ACL"))
        try es.set(a, "storm-broadcast=100")
        #expect(es.sw.offloadStatus(of: a) == .allowed)
        try es.set(a, "egress-frame-rate=100")
        #expect(es.sw.offloadStatus(of: a) == .mustSeeEveryFrame(reason: "policer: polices this port"))
        try es.apply(PortSettings(), to: a)
        try es.apply(PortSettings(), to: b)
        #expect(es.sw.offloadStatus(of: a) == .allowed && es.sw.offloadStatus(of: b) == .allowed)
    }
}
