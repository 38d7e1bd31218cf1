import SwitchCore

/// Storm control (Hyper-V's `-StormLimit`): per port, at most `storm-broadcast`, `storm-multicast`
/// and `storm-unknown` frames per second of broadcast, multicast and unknown-unicast (a destination
/// the MAC table does not know, which the switch floods) from the port; the excess in each
/// one-second window is dropped and counted. Read from the port's traffic-limits property.
///
/// Time is the switch's per-batch clock (``VirtualSwitch/clockNanoseconds``): one read per batch.
///
/// ## Concurrency model
/// Confined to the switch's queue, like every extension (see ``PortPolicyExtension``).
public final class StormControl: PortPolicyExtension {
    public static let extensionName = "storm-control"

    struct State {
        /// Frames per second for broadcast, multicast, unknown unicast (0: no limit).
        var limit: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var used: (UInt64, UInt64, UInt64) = (0, 0, 0)
        var windowStart: UInt64 = 0
        var on = false
        var checksUnknown = false
    }

    private var state = UnsafeMutablePointer<State>.allocate(capacity: 1)
    private var capacity = 0
    private var onCount = 0
    private var reasons = (DropReason.runtFrame, DropReason.runtFrame, DropReason.runtFrame)
    private var dropped: (UInt64, UInt64, UInt64) = (0, 0, 0)

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: [])
        super.init(name: Self.extensionName, extensionClass: .filtering)
        state.initialize(to: State())
    }

    deinit { state.deallocate() }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        state.deallocate()
        state = .allocate(capacity: max(capacity, 1))
        state.initialize(repeating: State(), count: max(capacity, 1))
        self.capacity = capacity
        onCount = 0
        reasons = (sw.registerDropReason("broadcast storm limit (storm-control)"),
                   sw.registerDropReason("multicast storm limit (storm-control)"),
                   sw.registerDropReason("unknown-unicast storm limit (storm-control)"))
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard index >= 0 && index < capacity else { return }
        let l = port?.limits ?? TrafficLimits()
        let was = state[index].on
        var s = State()
        s.limit = (l.stormBroadcast ?? 0, l.stormMulticast ?? 0, l.stormUnknown ?? 0)
        s.on = l.hasStormControl
        s.checksUnknown = l.stormUnknown != nil
        s.windowStart = sw.clockNanoseconds
        state[index] = s
        if was != s.on { onCount += s.on ? 1 : -1 }
    }

    override public func ingress(_ context: inout IngressContext) {
        guard onCount > 0 else { return }
        let batch = context.batch
        let sw = context.sw
        let now = sw.clockNanoseconds
        for i in context.frames where context.isLive(i) {
            let p = batch.sourcePortIndex(i)
            guard p >= 0, p < capacity, state[p].on else { continue }
            if now &- state[p].windowStart >= 1_000_000_000 {
                state[p].windowStart = now
                state[p].used = (0, 0, 0)
            }
            let h = batch.parsed(i)
            if h.destination.isBroadcast {
                guard state[p].limit.0 != 0 else { continue }
                if state[p].used.0 >= state[p].limit.0 {
                    context.drop(i, reason: reasons.0)
                    dropped.0 &+= 1
                } else {
                    state[p].used.0 &+= 1
                }
            } else if h.destination.isMulticast {
                guard state[p].limit.1 != 0 else { continue }
                if state[p].used.1 >= state[p].limit.1 {
                    context.drop(i, reason: reasons.1)
                    dropped.1 &+= 1
                } else {
                    state[p].used.1 &+= 1
                }
            } else if state[p].checksUnknown && sw.macTable.lookup(h.destination, vlan: h.vlan, now: sw.now) == nil {
                if state[p].used.2 >= state[p].limit.2 {
                    context.drop(i, reason: reasons.2)
                    dropped.2 &+= 1
                } else {
                    state[p].used.2 &+= 1
                }
            }
        }
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("limited-ports", UInt64(onCount)), ExtensionCounter("dropped-broadcast", dropped.0),
         ExtensionCounter("dropped-multicast", dropped.1), ExtensionCounter("dropped-unknown-unicast", dropped.2)]
    }
}

/// A token bucket in bytes and one in frames; either may be off.
struct TokenBuckets {
    var bytesPerNanosecond = 0.0, byteDepth = 0.0, bytes = 0.0
    var framesPerNanosecond = 0.0, frameDepth = 0.0, frames = 0.0
    var hasBytes = false, hasFrames = false, on = false
    var last: UInt64 = 0

    init() {}

    init(_ s: PolicerSetting, now: UInt64) {
        on = s.isOn
        last = now
        if let r = s.rate {
            hasBytes = true
            bytesPerNanosecond = Double(r) / 8 / 1e9
            byteDepth = Double(s.effectiveBurst)
            bytes = byteDepth
        }
        if let r = s.frameRate {
            hasFrames = true
            framesPerNanosecond = Double(r) / 1e9
            frameDepth = Double(s.effectiveFrameBurst)
            frames = frameDepth
        }
    }

    /// Takes a frame of `length` bytes if both buckets allow it. A full byte bucket lets a frame
    /// larger than its depth (a GSO superframe) through, going into debt, so no frame is refused forever.
    @inline(__always)
    mutating func take(_ length: Int, now: UInt64) -> Bool {
        if now > last {
            let elapsed = Double(now &- last)
            last = now
            if hasBytes { bytes = min(byteDepth, bytes + elapsed * bytesPerNanosecond) }
            if hasFrames { frames = min(frameDepth, frames + elapsed * framesPerNanosecond) }
        }
        let len = Double(length)
        if hasBytes && bytes < min(len, byteDepth) { return false }
        if hasFrames && frames < 1 { return false }
        if hasBytes { bytes -= len }
        if hasFrames { frames -= 1 }
        return true
    }
}

/// Policing (Hyper-V's `-MaximumBandwidth`, OVS's `ingress_policing_rate`): per port, a token
/// bucket in bits per second and/or frames per second, each with a burst, for what the port sends
/// (`ingress-*`, before forwarding) and for what is delivered to it (`egress-*`, per destination).
/// Frames over the rate are dropped (egress: the destination is excluded) and counted. Frames from
/// the switch itself bypass it. Time is the switch's per-batch clock.
///
/// ## Concurrency model
/// Confined to the switch's queue, like every extension (see ``PortPolicyExtension``).
public final class Policer: PortPolicyExtension {
    public static let extensionName = "policer"

    /// Per port: index `port * 2` ingress, `port * 2 + 1` egress.
    private var buckets = UnsafeMutablePointer<TokenBuckets>.allocate(capacity: 1)
    private var capacity = 0
    private var ingressOn = 0, egressOn = 0
    private var ingressReason = DropReason.runtFrame
    private var egressReason = DropReason.runtFrame
    private var droppedIngress: UInt64 = 0, droppedEgress: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: [])
        super.init(name: Self.extensionName, extensionClass: .filtering)
        buckets.initialize(to: TokenBuckets())
    }

    deinit { buckets.deallocate() }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        buckets.deallocate()
        let n = max(capacity * 2, 1)
        buckets = .allocate(capacity: n)
        buckets.initialize(repeating: TokenBuckets(), count: n)
        self.capacity = capacity
        ingressOn = 0
        egressOn = 0
        ingressReason = sw.registerDropReason("ingress rate exceeded (policer)")
        egressReason = sw.registerDropReason("egress rate exceeded (policer)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard index >= 0 && index < capacity else { return }
        let l = port?.limits ?? TrafficLimits()
        let now = sw.clockNanoseconds
        for (k, setting) in [(index * 2, l.ingress), (index * 2 + 1, l.egress)] {
            let was = buckets[k].on
            // Unchanged settings keep their bucket's level (another property of the port changed).
            if was && setting.isOn && Self.same(buckets[k], TokenBuckets(setting, now: now)) { continue }
            buckets[k] = TokenBuckets(setting, now: now)
            if was != setting.isOn {
                if k % 2 == 0 { ingressOn += setting.isOn ? 1 : -1 } else { egressOn += setting.isOn ? 1 : -1 }
            }
        }
    }

    private static func same(_ a: TokenBuckets, _ b: TokenBuckets) -> Bool {
        a.hasBytes == b.hasBytes && a.hasFrames == b.hasFrames && a.bytesPerNanosecond == b.bytesPerNanosecond
            && a.byteDepth == b.byteDepth && a.framesPerNanosecond == b.framesPerNanosecond && a.frameDepth == b.frameDepth
    }

    override public func ingress(_ context: inout IngressContext) {
        guard ingressOn > 0 else { return }
        let batch = context.batch
        let now = context.sw.clockNanoseconds
        for i in context.frames where context.isLive(i) {
            let p = batch.sourcePortIndex(i)
            guard p >= 0, p < capacity, buckets[p * 2].on else { continue }
            if !buckets[p * 2].take(batch.length(i), now: now) {
                context.drop(i, reason: ingressReason)
                droppedIngress &+= 1
            }
        }
    }

    override public func egress(_ context: inout EgressContext) {
        guard egressOn > 0 else { return }
        let batch = context.batch
        let now = context.sw.clockNanoseconds
        for i in context.frames where context.isLive(i) && !batch.isTrusted(i) {
            let dests = context.destinations(i)
            for d in 0..<dests.count where !dests[d].isExcluded {
                let k = dests[d].portIndex * 2 + 1
                guard dests[d].portIndex < capacity, buckets[k].on else { continue }
                if !buckets[k].take(batch.length(i), now: now) {
                    context.exclude(i, destination: d, reason: egressReason)
                    droppedEgress &+= 1
                }
            }
        }
    }

    /// A policed port's frames are all counted against its buckets. (Storm control needs no such
    /// override: the fast path carries only known unicast, which it never limits.)
    override public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        guard let index = sw.portIndex(of: port), index < capacity, buckets[index * 2].on || buckets[index * 2 + 1].on else { return .allowed }
        return .mustSeeEveryFrame(reason: "polices this port")
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("ingress-ports", UInt64(ingressOn)), ExtensionCounter("egress-ports", UInt64(egressOn)),
         ExtensionCounter("dropped-ingress", droppedIngress), ExtensionCounter("dropped-egress", droppedEgress)]
    }
}
