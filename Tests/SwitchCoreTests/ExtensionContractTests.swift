import EmbeddedSwitch
import SwitchCore
import Testing

/// The extension contract of issue 14 (see ``SwitchExtension``): rewrites that forwarding sees,
/// frames that grow and shrink, timers, per-frame context, clones with destinations, a pended
/// NIC_DISCONNECT, NIC save/restore.
@Suite("Extension contract: rewrites, timers, context, clones, pended disconnect, save/restore")
struct ExtensionContractTests {
    // MARK: - Rewrites

    @Test("A filter's destination MAC rewrite (setter or raw bytes) is forwarded to the new port")
    func rewrittenDestination() throws {
        for raw in [false, true] {
            let es = EmbeddedSwitch()
            let rewriter = RecordingExtension("rewriter", .filtering)
            let a = try es.addPort("a", mac: mac(1))
            let b = try es.addPort("b", mac: mac(2))
            let c = try es.addPort("c", mac: mac(3))
            es.learn(b, mac(2))
            es.learn(c, mac(3))
            // Control: without the extension the frame goes to b.
            es.send(from: a, frame(mac(2), mac(1), tag: 1))
            #expect(es.take(b).count == 1)
            #expect(es.take(c).isEmpty)

            try es.sw.enable(rewriter)
            rewriter.onIngress = { ctx in
                for i in ctx.frames where ctx.isLive(i) && ctx.batch.parsed(i).destination == mac(2) {
                    if raw {
                        let bytes = ctx.mutableBytes(i)!
                        for (k, v) in mac(3).bytes.enumerated() { bytes[k] = v }
                    } else {
                        #expect(ctx.setDestinationMAC(i, mac(3)))
                        #expect(ctx.batch.parsed(i).destination == mac(3))  // at once, for the setter
                    }
                }
            }
            es.send(from: a, frame(mac(2), mac(1), tag: 2))
            #expect(es.take(b).isEmpty, "forwarded by the old destination (raw: \(raw))")
            #expect(es.take(c) == [frame(mac(3), mac(1), tag: 2)])
        }
    }

    @Test("A rewrite that no longer parses is dropped and reported with the extension's name")
    func brokenRewriteDropped() throws {
        let es = EmbeddedSwitch()
        let breaker = RecordingExtension("breaker", .filtering)
        try es.sw.enable(breaker)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        breaker.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) { ctx.mutableBytes(i)![6] = 0x01 }  // multicast source
        }
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b).isEmpty)
        #expect(es.drops.map(\.summary) == ["\(a) ingress multicast source MAC by breaker"])
    }

    @Test("Tag push: an untagged frame pushed into VLAN 20 reaches the trunk tagged and the access port untagged")
    func tagPush() throws {
        let es = EmbeddedSwitch()
        let pusher = RecordingExtension("pusher", .filtering)
        let u = try es.addPort("u", mac: mac(1))
        let u2 = try es.addPort("u2", mac: mac(2))
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [20], native: nil))])
        let v = try es.addPort("v", mac: mac(4), properties: [.vlan(.access(20))])
        let f = frame(.broadcast, mac(1), tag: 7)
        // Control: untagged domain only.
        es.send(from: u, f)
        #expect(es.take(u2) == [f])
        #expect(es.take(t).isEmpty && es.take(v).isEmpty)

        try es.sw.enable(pusher)
        pusher.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                let before = ctx.batch.headroom(i)
                #expect(ctx.pushVLANTag(i, tci: 0x2000 | 20))  // priority 1, VID 20
                #expect(ctx.batch.headroom(i) == before - 4)
                #expect(ctx.batch.parsed(i).vlan == 20)
            }
        }
        es.send(from: u, f)
        #expect(es.take(u2).isEmpty)
        #expect(es.take(t) == [TestFrame.ethernet(dst: .broadcast, src: mac(1), vlan: 0x2000 | 20, payload: Array(repeating: 7, count: 46))])
        #expect(es.take(v) == [f])
    }

    @Test("Tag pop: a trunk's VLAN-20 frame popped joins the trunk's native VLAN")
    func tagPop() throws {
        let es = EmbeddedSwitch()
        let popper = RecordingExtension("popper", .filtering)
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [20], native: 0))])
        let u = try es.addPort("u", mac: mac(1))
        let v = try es.addPort("v", mac: mac(4), properties: [.vlan(.access(20))])
        let tagged = frame(.broadcast, mac(3), tag: 9, vlan: 20)
        let untagged = frame(.broadcast, mac(3), tag: 9)
        es.send(from: t, tagged)
        #expect(es.take(v) == [untagged])
        #expect(es.take(u).isEmpty)

        try es.sw.enable(popper)
        popper.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                #expect(ctx.popVLANTag(i))
                #expect(!ctx.popVLANTag(i))  // nothing left to pop
                #expect(ctx.batch.parsed(i).vlan == 0)
            }
        }
        es.send(from: t, tagged)
        #expect(es.take(u) == [untagged])
        #expect(es.take(v).isEmpty)
    }

    @Test("setVLAN moves a frame to another VLAN; a tagged frame's tag follows")
    func setVLAN() throws {
        let es = EmbeddedSwitch()
        let mover = RecordingExtension("mover", .filtering)
        try es.sw.enable(mover)
        mover.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) { #expect(ctx.setVLAN(i, 30)); #expect(!ctx.setVLAN(i, 4095)) }
        }
        let t = try es.addPort("t", mac: mac(3), properties: [.vlan(.trunk(allowed: [20, 30], native: nil))])
        let t2 = try es.addPort("t2", mac: mac(5), properties: [.vlan(.trunk(allowed: [20, 30], native: nil))])
        let v20 = try es.addPort("v20", mac: mac(4), properties: [.vlan(.access(20))])
        let v30 = try es.addPort("v30", mac: mac(6), properties: [.vlan(.access(30))])
        es.send(from: t, frame(.broadcast, mac(3), tag: 4, vlan: 0xA000 | 20))
        #expect(es.take(v20).isEmpty)
        #expect(es.take(v30) == [frame(.broadcast, mac(3), tag: 4)])
        #expect(es.take(t2) == [frame(.broadcast, mac(3), tag: 4, vlan: 0xA000 | 30)])
    }

    @Test("Encapsulate (grow at the front) and decapsulate (shrink) in place; forwarding follows the outer header")
    func encapsulation() throws {
        let es = EmbeddedSwitch()
        let encap = RecordingExtension("encap", .filtering)
        let decap = RecordingExtension("decap", .filtering)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(2))
        es.learn(c, mac(3))
        try es.sw.enable(encap)
        let inner = frame(mac(2), mac(1), tag: 5)
        let outer = mac(3).bytes + mac(1).bytes + [0x88, 0xB6]
        encap.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.parsed(i).destination == mac(2) {
                let room = ctx.batch.headroom(i)
                #expect(room >= 100)
                #expect(ctx.adjustHead(i, by: room + 1) == nil)  // beyond the headroom: refused, unchanged
                #expect(ctx.batch.length(i) == inner.count)
                let bytes = ctx.adjustHead(i, by: 14)!
                for (k, v) in outer.enumerated() { bytes[k] = v }
                #expect(ctx.adjustTail(i, by: 4) != nil)  // a trailer, trimmed again below
                #expect(ctx.adjustTail(i, by: -4) != nil)
            }
        }
        es.send(from: a, inner)
        #expect(es.take(b).isEmpty)
        #expect(es.take(c) == [outer + inner], "the encapsulated frame goes by its outer destination")

        try es.sw.enable(decap)  // below encap: strips the outer header again
        decap.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.batch.parsed(i).etherType == 0x88B6 {
                #expect(ctx.adjustHead(i, by: -14) != nil)
            }
        }
        es.send(from: a, inner)
        #expect(es.take(c).isEmpty)
        #expect(es.take(b) == [inner])
    }

    @Test("A capture extension cannot rewrite, push or grow")
    func captureCannotRewrite() throws {
        let es = EmbeddedSwitch()
        let cap = RecordingExtension("cap", .capture)
        try es.sw.enable(cap)
        cap.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                #expect(ctx.mutableBytes(i) == nil)
                #expect(!ctx.setDestinationMAC(i, mac(9)))
                #expect(!ctx.pushVLANTag(i, tci: 5))
                #expect(ctx.adjustHead(i, by: 4) == nil)
            }
        }
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(es.take(b) == [frame(.broadcast, mac(1))])
        #expect(es.diagnostics.count == 4)
    }

    // MARK: - Timers

    /// A filter that holds every frame and releases the queue from a timer (a shaper's skeleton).
    final class DelayQueue: SwitchExtension {
        let name = "delay"
        let extensionClass = ExtensionClass.filtering
        let delay: UInt64
        var held: [PendedFrame] = []
        var fired: [ExtensionTimer] = []
        var sw: VirtualSwitch?
        init(delay: UInt64) { self.delay = delay }
        func attached(to sw: VirtualSwitch) { self.sw = sw }
        func ingress(_ ctx: inout IngressContext) {
            for i in ctx.frames where ctx.isLive(i) {
                guard let p = ctx.pend(i) else { continue }
                if held.isEmpty { ctx.sw.scheduleTimer(for: self, after: delay, tag: 7) }
                held.append(p)
            }
        }
        func timerFired(_ timer: ExtensionTimer, switch sw: VirtualSwitch) {
            fired.append(timer)
            for p in held { sw.resume(p) }
            held.removeAll()
        }
    }

    @Test("A pended frame is released by a timer on an idle switch")
    func timerReleasesPended() throws {
        let es = EmbeddedSwitch()
        let q = DelayQueue(delay: 5_000_000)
        try es.sw.enable(q)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let f = frame(.broadcast, mac(1), tag: 3)
        es.send(from: a, [f, f])
        #expect(q.held.count == 2)
        #expect(es.take(b).isEmpty)
        #expect(es.sw.nextTimerDeadline == es.clockNanoseconds + 5_000_000)
        #expect(es.advanceClock(nanoseconds: 4_999_999) == 0)  // not yet due
        #expect(q.fired.isEmpty)
        #expect(es.advanceClock(nanoseconds: 1) == 2)  // due: no traffic needed
        #expect(q.fired.map(\.tag) == [7])
        #expect(es.take(b) == [f, f])
        #expect(es.sw.nextTimerDeadline == nil)  // one-shot
        #expect(es.sw.nicReferenceCount(of: a) == 0)
    }

    final class Ticker: SwitchExtension {
        let name = "ticker"
        let extensionClass = ExtensionClass.capture
        var ticks: [UInt64] = []
        var timer: ExtensionTimer?
        func timerFired(_ timer: ExtensionTimer, switch sw: VirtualSwitch) { ticks.append(sw.clock()) }
    }

    @Test("A periodic tick fires once per interval without catching up; cancel and disable stop it")
    func periodicTick() throws {
        let es = EmbeddedSwitch()
        let t = Ticker()
        #expect(es.sw.scheduleTimer(for: t, after: 1) == nil)  // not enabled
        try es.sw.enable(t)
        let start = es.clockNanoseconds
        t.timer = es.sw.scheduleTimer(for: t, after: 1_000_000, every: 1_000_000)
        es.advanceClock(nanoseconds: 1_000_000)
        es.advanceClock(nanoseconds: 1_000_000)
        es.advanceClock(nanoseconds: 10_500_000)  // a stall: one tick, then the next a full interval later
        #expect(t.ticks == [start + 1_000_000, start + 2_000_000, start + 12_500_000])
        #expect(es.sw.nextTimerDeadline == start + 13_500_000)
        es.sw.cancelTimer(t.timer!)
        #expect(es.sw.nextTimerDeadline == nil)
        es.sw.scheduleTimer(for: t, after: 1_000_000, every: 1_000_000)
        try es.sw.disable("ticker")
        #expect(es.sw.nextTimerDeadline == nil)
        es.advanceClock(nanoseconds: 5_000_000)
        #expect(t.ticks.count == 3)
    }

    // MARK: - Per-frame context and clones

    @Test("Per-frame context survives ingress to egress, per extension; clones do not inherit it")
    func frameContext() throws {
        let es = EmbeddedSwitch()
        let first = RecordingExtension("first", .filtering)
        let second = RecordingExtension("second", .filtering)
        try es.sw.enable(first)
        try es.sw.enable(second)
        var seenFirst: [UInt64?] = [], seenSecond: [UInt64?] = []
        first.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                #expect(ctx.frameContext(i) == nil)
                #expect(ctx.setFrameContext(i, 100 + UInt64(ctx.batch.bytes(i)[20])))
            }
        }
        second.onIngress = { ctx in
            for i in ctx.frames where ctx.isLive(i) && ctx.frameContext(i) == nil {
                ctx.setFrameContext(i, 7)
                ctx.clone(i)
            }
        }
        first.onEgress = { ctx in for i in ctx.frames where ctx.isLive(i) { seenFirst.append(ctx.frameContext(i)) } }
        second.onEgress = { ctx in for i in ctx.frames where ctx.isLive(i) { seenSecond.append(ctx.frameContext(i)) } }
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, [frame(.broadcast, mac(1), tag: 1), frame(.broadcast, mac(1), tag: 2)])
        // Two originals (with both contexts) and their two clones (with none).
        #expect(seenFirst == [101, 102, nil, nil])
        #expect(seenSecond == [7, 7, nil, nil])
        #expect(es.take(b).count == 4)
    }

    @Test("An egress clone keeps its destinations (and exclusions); an ingress clone may keep them too")
    func cloneWithDestinations() throws {
        let es = EmbeddedSwitch()
        let dup = RecordingExtension("dup", .filtering)
        try es.sw.enable(dup)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        let d = try es.addPort("d", mac: mac(4))
        var cloneDestinations: [[PortID]] = []
        dup.onEgress = { ctx in
            for i in ctx.frames where ctx.isLive(i) {
                // Exclude d first: the clone inherits the exclusion.
                if let k = ctx.destinations(i).firstIndex(where: { $0.port == d }) { ctx.exclude(i, destination: k, reason: .noDestination) }
                let copy = ctx.clone(i)!
                cloneDestinations.append(ctx.destinations(copy).filter { !$0.isExcluded }.map(\.port))
            }
        }
        let f = frame(.broadcast, mac(1), tag: 6)
        es.send(from: a, f)
        #expect(Set(cloneDestinations.flatMap { $0 }) == [b, c])
        #expect(es.take(b) == [f, f])
        #expect(es.take(c) == [f, f])
        #expect(es.take(d).isEmpty)
    }

    /// A forwarding extension with a static MAC table; optionally duplicates every frame with an
    /// ingress clone that keeps the destinations it added.
    final class StaticForwarder: SwitchExtension {
        let name = "static-fwd"
        let extensionClass = ExtensionClass.forwarding
        var table: [MACAddress: PortID] = [:]
        var duplicate = false
        /// Frames to these ports are held (pended after adding destinations) until flushed.
        var holdFor: Set<PortID> = []
        var held: [PendedFrame] = []
        var pendDisconnect = true
        var disconnectsPended: [PortID] = []
        func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
            if request.kind == .nicDisconnect && pendDisconnect && held.contains(where: { $0.destinations.contains { $0.port == request.port.id } }) {
                disconnectsPended.append(request.port.id)
                return .pend
            }
            return .accept
        }
        func ingress(_ ctx: inout IngressContext) {
            for i in ctx.frames where ctx.isLive(i) {
                guard let port = table[ctx.batch.parsed(i).destination] else { continue }
                ctx.addDestination(i, port: port)
                if holdFor.contains(port), let p = ctx.pend(i) { held.append(p); continue }
                if duplicate { #expect(ctx.clone(i, keepingDestinations: true) != nil) }
            }
        }
        /// Flushes what it holds and completes the disconnects it pended.
        func flush(_ sw: VirtualSwitch) throws {
            for p in held { sw.resume(p) }
            held.removeAll()
            for port in disconnectsPended { try sw.completePendedDisconnect(on: port) }
            disconnectsPended.removeAll()
        }
    }

    @Test("The forwarding extension clones with its destinations on ingress")
    func ingressCloneKeepsDestinations() throws {
        let es = EmbeddedSwitch()
        let fwd = StaticForwarder()
        fwd.duplicate = true
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        fwd.table = [mac(2): b]
        let f = frame(mac(2), mac(1))
        es.send(from: a, f)
        #expect(es.take(b) == [f, f])
        #expect(es.take(c).isEmpty)
    }

    // MARK: - Pended NIC_DISCONNECT

    @Test("The forwarding extension pends NIC_DISCONNECT until its held frames for the NIC are flushed")
    func pendedDisconnect() throws {
        let es = EmbeddedSwitch()
        let fwd = StaticForwarder()
        let above = RecordingExtension("above", .filtering)
        try es.sw.enable(above)
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        fwd.table = [mac(2): b]
        fwd.holdFor = [b]
        let f = frame(mac(2), mac(1), tag: 0x33)
        es.send(from: a, [f, f])
        #expect(fwd.held.count == 2)
        #expect(es.take(b).isEmpty)

        es.clearRecords()
        var removed = false
        #expect(try !es.sw.removePort(b) { removed = true })
        #expect(fwd.disconnectsPended == [b])
        #expect(es.sw.pendedDisconnect(on: b) == "static-fwd")
        #expect(es.eventKinds.isEmpty, "NIC_DISCONNECT completed while pended")
        #expect(!above.completedKinds.contains(.nicDisconnect))
        #expect(es.sw.nicHolders(of: b)?.extensions == ["static-fwd (NIC_DISCONNECT pended)": 1])
        // The NIC takes no more ingress, cannot connect again, and NIC_DELETE waits.
        es.send(from: b, frame(mac(1), mac(2)))
        #expect(es.dropCount(b, .ingress, .sourceNotAccepting) == 1)
        #expect(throws: SwitchError.self) { try es.sw.connectNIC(on: b) }

        // The flush: held frames are delivered to b, then the disconnect and the rest of the removal follow.
        try fwd.flush(es.sw)
        #expect(es.eventKinds.isEmpty)  // not before the resumed frames have travelled
        es.flushPending()
        #expect(es.take(b) == [f, f])
        #expect(es.eventKinds == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(above.completedKinds.contains(.nicDisconnect))
        #expect(removed)
        #expect(es.sw.nicReferenceCount(of: a) == 0)
    }

    @Test("Completing a pended NIC_DISCONNECT from a timer on an idle switch; only the forwarding extension may pend")
    func pendedDisconnectOnTimer() throws {
        final class TimedForwarder: SwitchExtension {
            let name = "timed-fwd"
            let extensionClass = ExtensionClass.forwarding
            let inner = StaticForwarder()
            func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
                let v = inner.control(request, switch: sw)
                if v == .pend { sw.scheduleTimer(for: self, after: 2_000_000) }
                return v
            }
            func ingress(_ ctx: inout IngressContext) { inner.ingress(&ctx) }
            func timerFired(_ timer: ExtensionTimer, switch sw: VirtualSwitch) { try? inner.flush(sw) }
        }
        let es = EmbeddedSwitch()
        let wrongPender = RecordingExtension("filter", .filtering)
        wrongPender.onControl = { _, _ in }
        try es.sw.enable(wrongPender)
        let fwd = TimedForwarder()
        try es.sw.enable(fwd)
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("b", mac: mac(2))
        fwd.inner.table = [mac(2): b]
        fwd.inner.holdFor = [b]
        es.send(from: a, frame(mac(2), mac(1)))
        try es.sw.disconnectNIC(on: b)
        #expect(es.sw.pendedDisconnect(on: b) == "timed-fwd")
        #expect(throws: SwitchError.self) { try es.sw.completePendedDisconnect(on: a) }
        let refused = #expect(throws: SwitchError.self) { try es.sw.connectNIC(on: b) }
        #expect(refused?.message.contains("pended by extension timed-fwd") == true)
        es.advanceClock(nanoseconds: 2_000_000)
        #expect(es.take(b).count == 1)
        #expect(es.sw.pendedDisconnect(on: b) == nil)
        #expect(es.sw.nic(of: b)?.state == .disconnected)
        #expect(es.events.last?.kind == .nicDisconnect)
        #expect(try es.sw.deleteNIC(on: b))
    }

    @Test("A filtering extension's pend is ignored with a diagnostic; disabling the forwarder completes its pended disconnect")
    func pendRules() throws {
        final class BadPender: SwitchExtension {
            let name = "bad"
            let extensionClass = ExtensionClass.filtering
            func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict { request.kind == .nicDisconnect ? .pend : .accept }
        }
        let es = EmbeddedSwitch()
        try es.sw.enable(BadPender())
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.disconnectNIC(on: a)
        #expect(es.sw.nic(of: a)?.state == .disconnected)
        #expect(es.sw.pendedDisconnect(on: a) == nil)
        #expect(es.diagnostics.contains { $0.contains("only the forwarding extension may pend") })

        let fwd = StaticForwarder()
        try es.sw.enable(fwd)
        let b = try es.addPort("b", mac: mac(2))
        let c = try es.addPort("c", mac: mac(3))
        fwd.table = [mac(3): c]
        fwd.holdFor = [c]
        es.send(from: b, frame(mac(3), mac(2)))
        es.clearRecords()
        try es.sw.disconnectNIC(on: c)
        #expect(es.sw.pendedDisconnect(on: c) == "static-fwd")
        try es.sw.disable("static-fwd")
        #expect(es.sw.pendedDisconnect(on: c) == nil)
        #expect(es.eventKinds == [.nicDisconnect])
    }

    // MARK: - NIC save/restore

    final class Stateful: SwitchExtension {
        let name = "stateful"
        let extensionClass = ExtensionClass.filtering
        var perPort: [String: [UInt8]] = [:]
        var restored: [(String, SavedNICState)] = []
        func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState? {
            perPort[port.name].map { SavedNICState(extensionName: "ignored", version: 3, data: $0) }
        }
        func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool {
            guard state.version == 3 else { return false }
            restored.append((port.name, state))
            perPort[port.name] = state.data
            return true
        }
    }

    @Test("NIC save collects each extension's blob by name; restore hands it back on another switch, by port name")
    func saveRestore() throws {
        let es = EmbeddedSwitch()
        let ext = Stateful()
        try es.sw.enable(ext)
        try es.sw.enable(RecordingExtension("plain", .filtering))
        _ = try es.addPort("other", mac: mac(9))
        let a = try es.addPort("a", mac: mac(1))
        ext.perPort["a"] = [1, 2, 3]
        let saved = es.sw.saveNICState(of: a)
        #expect(saved == [SavedNICState(extensionName: "stateful", version: 3, data: [1, 2, 3])])

        let es2 = EmbeddedSwitch()
        let ext2 = Stateful()
        try es2.sw.enable(ext2)
        _ = try es2.addPort("z", mac: mac(7))
        _ = try es2.addPort("y", mac: mac(8))
        let a2 = try es2.addPort("a", mac: mac(1), connect: false)
        #expect(a2 != a)
        let leftover = try es2.sw.restoreNICState(saved + [SavedNICState(extensionName: "gone", version: 1, data: [9]),
                                                           SavedNICState(extensionName: "stateful", version: 99, data: [])], on: a2)
        #expect(ext2.perPort["a"] == [1, 2, 3])
        #expect(ext2.restored.count == 1)
        #expect(leftover.map(\.extensionName) == ["gone", "stateful"])
        #expect(es2.diagnostics.count == 2)
    }
}
