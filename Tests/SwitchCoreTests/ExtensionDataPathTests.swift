import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Extensions on the data path")
struct ExtensionDataPathTests {
    @Test("A capture extension cannot drop, modify, clone, pend or exclude; the frame is still delivered")
    func captureIsReadOnly() throws {
        let es = EmbeddedSwitch()
        let cap = RecordingExtension("cap", .capture)
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        var results: [String] = []
        cap.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                results.append("drop:\(ctx.drop(i, reason: .noDestination))")
                results.append("bytes:\(ctx.mutableBytes(i) != nil)")
                results.append("clone:\(ctx.clone(i) != nil)")
                results.append("pend:\(ctx.pend(i) != nil)")
                results.append("dest:\(ctx.addDestination(i, port: b))")
            }
        }
        cap.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                results.append("exclude:\(ctx.exclude(i, destination: 0, reason: .noDestination))")
            }
        }
        let f = frame(.broadcast, mac(1))
        es.send(from: a, f)
        #expect(results == ["drop:false", "bytes:false", "clone:false", "pend:false", "dest:false", "exclude:false"])
        #expect(es.take(b) == [f])
        #expect(es.sw.counters(of: a)?.totalDrops == 0)
        #expect(es.sw.counters(of: b)?.totalDrops == 0)
        #expect(es.diagnostics.count == 6)
        #expect(es.diagnostics.allSatisfy { $0.hasPrefix("cap:") })
    }

    @Test("A filtering drop on ingress is counted at the source with its reason and reporter")
    func filteringDrop() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        var reason = DropReason.noDestination
        filt.onAttached = { sw in reason = sw.registerDropReason("blocked by policy 7") }
        try es.sw.enable(filt)
        #expect(es.sw.text(of: reason) == "blocked by policy 7")
        #expect(es.sw.registerDropReason("blocked by policy 7") == reason)  // idempotent
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.bytes(i)[14] == 0xBB { ctx.drop(i, reason: reason) }
        }
        es.send(from: a, [frame(.broadcast, mac(1), tag: 0xBB), frame(.broadcast, mac(1), tag: 0xCC)])
        #expect(es.take(b) == [frame(.broadcast, mac(1), tag: 0xCC)])
        #expect(es.dropCount(a, .ingress, reason) == 1)
        #expect(es.sw.counters(of: a)?.totalDrops == 1)
        #expect(es.drops.map(\.summary) == ["\(a) ingress blocked by policy 7 by filt"])
        #expect(es.sw.counters(of: a)?.drops == [PortCounters.DropKey(direction: .ingress, reason: "blocked by policy 7", reporter: "filt"): 1])
        // The same built-in reason from the extension and from the core is counted per reporter.
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.bytes(i)[14] == 0xDD { ctx.drop(i, reason: .vlanNotAllowed) }
        }
        es.send(from: a, [frame(.broadcast, mac(1), tag: 0xDD), frame(.broadcast, mac(1), tag: 0xEE, vlan: 20)])
        let drops = try #require(es.sw.counters(of: a)?.drops)
        #expect(drops[PortCounters.DropKey(direction: .ingress, reason: es.sw.text(of: .vlanNotAllowed), reporter: "filt")] == 1)
        #expect(drops[PortCounters.DropKey(direction: .ingress, reason: es.sw.text(of: .vlanNotAllowed), reporter: "core:admission")] == 1)
    }

    @Test("A flood that finds no other port in its VLAN is not a drop; a unicast to its own port is")
    func floodWithoutPort() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        es.send(from: a, [frame(.broadcast, mac(1)), frame(mac(9), mac(1))])  // broadcast; unknown unicast (flooded)
        #expect(es.sw.counters(of: a)?.drops == [:])
        #expect(es.sw.floodsWithoutPort == 2)
        es.send(from: a, frame(mac(1), mac(1)))  // to itself: learned on a
        #expect(es.sw.counters(of: a)?.drops == [PortCounters.DropKey(direction: .ingress, reason: es.sw.text(of: .destinationIsSource), reporter: "core:forwarding"): 1])
    }

    @Test("A filtering extension may modify frame bytes")
    func modify() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) { ctx.mutableBytes(i)?[20] = 0xEE }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).first?[20] == 0xEE)
    }

    @Test("Egress exclusion is one-way and counted at the excluded destination")
    func exclusionOneWay() throws {
        let es = EmbeddedSwitch()
        let upper = RecordingExtension("upper", .filtering)
        let lower = RecordingExtension("lower", .filtering)
        try es.sw.enable(upper)
        try es.sw.enable(lower)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        var included: [Bool] = []
        // Egress runs bottom-up: lower excludes b, then upper tries to re-include it.
        lower.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                for (d, dest) in ctx.destinations(i).enumerated() where dest.port == b {
                    ctx.exclude(i, destination: d, reason: .vlanNotAllowed)
                }
            }
        }
        upper.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                for (d, dest) in ctx.destinations(i).enumerated() where dest.port == b {
                    #expect(dest.isExcluded)
                    included.append(ctx.include(i, destination: d))
                }
            }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(included == [false])
        #expect(es.take(b).isEmpty)
        #expect(es.take(c).count == 1)
        #expect(es.dropCount(b, .egress, .vlanNotAllowed) == 1)
        #expect(es.dropCount(a, .ingress, .vlanNotAllowed) == 0)
        #expect(es.drops.first?.reporter == "lower")
    }

    @Test("All destinations excluded: the frame is dropped at its source")
    func allExcluded() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        filt.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                for d in 0..<ctx.destinations(i).count { ctx.exclude(i, destination: d, reason: .noDestination) }
                ctx.exclude(i, destination: 0, reason: .noDestination)  // again: no double count
            }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty && es.take(c).isEmpty)
        #expect(es.dropCount(b, .egress, .noDestination) == 1)
        #expect(es.dropCount(c, .egress, .noDestination) == 1)
        #expect(es.dropCount(a, .ingress, .allDestinationsExcluded) == 1)
    }

    @Test("Injection from port 0: trusted, counted, forwarded by learning, not learned")
    func injectionFromSwitch() throws {
        let es = EmbeddedSwitch()
        let cap = RecordingExtension("cap", .capture)
        try es.sw.enable(cap)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(2))
        var toInject: [[UInt8]] = []
        var trusted: [Bool] = []
        cap.onIngress = { ctx in
            for f in toInject {
                f.withUnsafeBytes {
                    if let i = ctx.inject($0) { trusted.append(ctx.batch.isTrusted(i)) }
                }
            }
            toInject = []
        }
        let unicast = frame(mac(2), mac(50), tag: 0x10)
        let broadcast = frame(.broadcast, mac(51), tag: 0x11)
        toInject = [unicast, broadcast]
        es.send(from: a, frame(mac(77), mac(1), tag: 0x12))
        #expect(trusted == [true, true])
        #expect(es.sw.injectedFrames == 2)
        // Unicast by learning: only b. Broadcast: every connected NIC, the sender's port included
        // (port 0 is not a port).
        #expect(es.take(b).filter { $0 == unicast }.count == 1)
        #expect(!es.take(c).contains(unicast))
        let macs = es.sw.macEntries().map(\.mac)
        #expect(!macs.contains(mac(50)) && !macs.contains(mac(51)))
        #expect(es.sw.counters(of: a)?.framesIn == 1)  // injected frames are not a's
    }

    @Test("Injected broadcast reaches every connected port")
    func injectedBroadcast() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let injected = frame(.broadcast, mac(51), tag: 0x11)
        var done = false
        filt.onIngress = { ctx in
            guard !done else { return }
            done = true
            injected.withUnsafeBytes { _ = ctx.inject($0) }
        }
        es.send(from: a, frame(mac(77), mac(1)))
        #expect(es.take(a) == [injected])
        #expect(es.take(b).contains(injected))
    }

    @Test("Injected frames are seen only by the extensions below the injector")
    func injectionBelowOnly() throws {
        let es = EmbeddedSwitch()
        let top = RecordingExtension("top", .filtering)
        let mid = RecordingExtension("mid", .filtering)
        let bottom = RecordingExtension("bottom", .filtering)
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(top)
        try es.sw.enable(mid)
        try es.sw.enable(bottom)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let original = frame(.broadcast, mac(1), tag: 1)
        let injected = frame(.broadcast, mac(60), tag: 2)
        mid.onIngress = { ctx in
            // Injecting while iterating: the new frame is not live at this level.
            guard let i = injected.withUnsafeBytes({ ctx.inject($0) }) else { return }
            #expect(!ctx.isLive(i))
        }
        fwd.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) { ctx.addDestination(i, port: b) }
        }
        es.send(from: a, original)
        #expect(top.ingressFrames == [original])
        #expect(mid.ingressFrames == [original])
        #expect(bottom.ingressFrames == [original, injected])
        #expect(fwd.ingressFrames == [original, injected])
        // Egress carries both up the whole stack.
        #expect(top.egressFrames == [original, injected])
        #expect(es.take(b) == [original, injected])
    }

    @Test("A clone is delivered as well as the original")
    func cloneDeliversBoth() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.learn(b, mac(2))
        var clones: [Int] = []
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.source(i) == a {
                if let c = ctx.clone(i) {
                    clones.append(c)
                    #expect(ctx.batch.source(c) == a)
                }
            }
        }
        let f = frame(mac(2), mac(1))
        es.send(from: a, f)
        #expect(clones.count == 1)
        #expect(es.take(b) == [f, f])
        #expect(es.sw.injectedFrames == 0)  // a clone keeps its source; it is not an injection from port 0
    }

    @Test("A forwarding extension replaces built-in forwarding")
    func forwardingReplacesBuiltIn() throws {
        let es = EmbeddedSwitch()
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        var target: PortID? = c
        fwd.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                if let target {
                    #expect(ctx.addDestination(i, port: target))
                    #expect(ctx.addDestination(i, port: target))  // duplicate: accepted, not added twice
                }
            }
        }
        es.send(from: b, frame(.broadcast, mac(2)))  // would teach the built-in table b's MAC
        _ = es.take(c)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(c) == [frame(mac(2), mac(1))])
        #expect(es.take(b).isEmpty)
        #expect(es.take(a).isEmpty)
        #expect(es.sw.macEntries().isEmpty, "built-in learning ran beside the forwarding extension")

        target = nil
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty && es.take(c).isEmpty)
        #expect(es.dropCount(a, .ingress, .noDestination) == 1)
        #expect(es.drops.last?.reason == "no destination")
    }

    @Test("At most one forwarding extension; a filtering one cannot add destinations")
    func oneForwarding() throws {
        let es = EmbeddedSwitch()
        try es.sw.enable(RecordingExtension("fwd1", .forwarding))
        let error = #expect(throws: SwitchError.self) { try es.sw.enable(RecordingExtension("fwd2", .forwarding)) }
        #expect(error?.code == .exists)
        #expect(error?.message.contains("fwd1") == true)
        #expect(throws: SwitchError.self) { try es.sw.enable(RecordingExtension("fwd1", .filtering)) }  // duplicate name
        try es.sw.disable("fwd1")
        try es.sw.enable(RecordingExtension("fwd2", .forwarding))
        #expect(es.sw.extensions.map(\.name) == ["fwd2"])

        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        var added: [Bool] = []
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) { added.append(ctx.addDestination(i, port: b)) }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(added == [false])
        #expect(es.take(b).isEmpty)  // fwd2 adds nothing
    }

    @Test("A frame pended by a filter is not delivered until resumed")
    func pendHolds() throws {
        let es = EmbeddedSwitch()
        let filt = RecordingExtension("filt", .filtering)
        try es.sw.enable(filt)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        var pended: [PendedFrame] = []
        filt.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.source(i) == a {
                if let p = ctx.pend(i) { pended.append(p) }
            }
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
        #expect(es.sw.counters(of: a)?.totalDrops == 0)
        #expect(es.sw.processPending(es.batch, to: es) == 0)
        es.sw.resume(pended[0])
        es.sw.resume(pended[0])  // twice: once only
        // A resumed frame rides along with the next batch too.
        es.send(from: b, frame(.broadcast, mac(2)))
        #expect(es.take(b) == [frame(.broadcast, mac(1))])
        #expect(es.take(a) == [frame(.broadcast, mac(2))])
    }

    @Test("The forwarding extension can address frames it injects or clones itself")
    func forwardingInjects() throws {
        let es = EmbeddedSwitch()
        let fwd = RecordingExtension("fwd", .forwarding)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        let extra = frame(mac(3), mac(90), tag: 0x31)
        var results: [Bool] = []
        fwd.onIngress = { ctx in
            let original = ctx.frames
            for i in original where ctx.isLive(i) {
                ctx.addDestination(i, port: b)
                if let copy = ctx.clone(i) { results.append(ctx.addDestination(copy, port: c)) }
            }
            if let j = extra.withUnsafeBytes({ ctx.inject($0) }) { results.append(ctx.addDestination(j, port: c)) }
        }
        let f = frame(.broadcast, mac(1))
        es.send(from: a, f)
        #expect(results == [true, true])
        #expect(es.take(b) == [f])
        #expect(es.take(c) == [f, extra])
        #expect(es.sw.counters(of: a)?.totalDrops == 0)
        #expect(es.sw.switchDropCounters.isEmpty)
    }
}
