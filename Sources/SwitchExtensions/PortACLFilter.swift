import SwitchCore

/// One ACL rule compiled for the data path: plain values and masks, no references.
struct CompiledACLRule {
    static let srcMAC: UInt32 = 1, dstMAC: UInt32 = 2, etherType: UInt32 = 4, vlan: UInt32 = 8
    static let srcIP: UInt32 = 16, dstIP: UInt32 = 32, proto: UInt32 = 64, srcPort: UInt32 = 128, dstPort: UInt32 = 256
    static let established: UInt32 = 512, icmpType: UInt32 = 1024
    /// Fields that need the IP or transport header.
    static let needsL3: UInt32 = srcIP | dstIP | proto | srcPort | dstPort | established | icmpType

    var fields: UInt32 = 0
    /// 0 allow, 1 deny, 2 count.
    var action: UInt8 = 0
    var id: Int32 = 0
    var srcMAC: UInt64 = 0, dstMAC: UInt64 = 0
    var etherType: UInt16 = 0, vlan: UInt16 = 0
    /// 4 or 6 when an address is matched.
    var family: UInt8 = 0
    var srcHigh: UInt64 = 0, srcLow: UInt64 = 0, srcMaskHigh: UInt64 = 0, srcMaskLow: UInt64 = 0
    var dstHigh: UInt64 = 0, dstLow: UInt64 = 0, dstMaskHigh: UInt64 = 0, dstMaskLow: UInt64 = 0
    var proto: UInt8 = 0, icmpType: UInt8 = 0
    var srcPortLow: UInt16 = 0, srcPortHigh: UInt16 = 0, dstPortLow: UInt16 = 0, dstPortHigh: UInt16 = 0

    init(_ r: ACLRule) {
        id = Int32(r.id)
        action = r.action == .allow ? 0 : r.action == .deny ? 1 : 2
        if let m = r.sourceMAC { fields |= Self.srcMAC; srcMAC = m.rawValue }
        if let m = r.destinationMAC { fields |= Self.dstMAC; dstMAC = m.rawValue }
        if let e = r.etherType { fields |= Self.etherType; etherType = e }
        if let v = r.vlan { fields |= Self.vlan; vlan = v }
        func masks(_ p: IPPrefix) -> (UInt64, UInt64, UInt64, UInt64) {
            if p.family == .ipv4 { return (0, p.low, 0, UInt64(p.ipv4Mask)) }
            let (mh, ml) = IPPrefix.mask6(p.length)
            return (p.high, p.low, mh, ml)
        }
        if let p = r.sourceIP {
            fields |= Self.srcIP
            family = p.family == .ipv4 ? 4 : 6
            (srcHigh, srcLow, srcMaskHigh, srcMaskLow) = masks(p)
        }
        if let p = r.destinationIP {
            fields |= Self.dstIP
            family = p.family == .ipv4 ? 4 : 6
            (dstHigh, dstLow, dstMaskHigh, dstMaskLow) = masks(p)
        }
        if let p = r.ipProtocol { fields |= Self.proto; proto = p }
        if let p = r.sourcePorts { fields |= Self.srcPort; srcPortLow = p.lowerBound; srcPortHigh = p.upperBound }
        if let p = r.destinationPorts { fields |= Self.dstPort; dstPortLow = p.lowerBound; dstPortHigh = p.upperBound }
        if r.established { fields |= Self.established }
        if let t = r.icmpType { fields |= Self.icmpType; icmpType = t }
    }
}

/// The fields of one frame the rules look at, read once per frame (L3/L4 only when a rule needs them).
struct ACLFrameKey {
    var srcMAC: UInt64 = 0, dstMAC: UInt64 = 0
    var etherType: UInt16 = 0, vlan: UInt16 = 0
    var l3Read = false
    /// 0: not IP; 4 or 6.
    var family: UInt8 = 0
    var srcHigh: UInt64 = 0, srcLow: UInt64 = 0, dstHigh: UInt64 = 0, dstLow: UInt64 = 0
    /// -1: no readable transport header (not IP, a non-first fragment, an unreadable chain).
    var proto: Int16 = -1
    var hasPorts = false, hasFlags = false, hasICMP = false
    var srcPort: UInt16 = 0, dstPort: UInt16 = 0
    var tcpFlags: UInt8 = 0, icmpType: UInt8 = 0

    @inline(__always)
    init(_ batch: FrameBatch, _ i: Int) {
        let h = batch.parsed(i)
        srcMAC = h.source.rawValue
        dstMAC = h.destination.rawValue
        etherType = h.etherType
        vlan = h.vlan
    }

    @inline(__always)
    mutating func readL3(_ batch: FrameBatch, _ i: Int) {
        l3Read = true
        let h = batch.parsed(i)
        let p = UnsafeRawPointer(batch.frame(i))
        let l3 = Int(h.l3Offset)
        if h.etherType == EtherType.ipv4 {
            family = 4
            srcLow = UInt64(PacketFields.u32(p, l3 + 12))
            dstLow = UInt64(PacketFields.u32(p, l3 + 16))
        } else if h.etherType == EtherType.ipv6 {
            family = 6
            srcHigh = PacketFields.u64(p, l3 + 8)
            srcLow = PacketFields.u64(p, l3 + 16)
            dstHigh = PacketFields.u64(p, l3 + 24)
            dstLow = PacketFields.u64(p, l3 + 32)
        } else {
            return
        }
        guard case .header(let pr, let offset, let end) = PacketFields.transport(batch, i, h) else { return }
        proto = Int16(pr)
        switch pr {
        case 6, 17, 132:
            if offset + 4 <= end {
                hasPorts = true
                srcPort = PacketFields.u16(p, offset)
                dstPort = PacketFields.u16(p, offset + 2)
            }
            if pr == 6 && offset + 14 <= end {
                hasFlags = true
                tcpFlags = PacketFields.u8(p, offset + 13)
            }
        case 1, 58:
            if offset + 1 <= end {
                hasICMP = true
                icmpType = PacketFields.u8(p, offset)
            }
        default:
            break
        }
    }

    /// Whether rule `r` matches. The L3/L4 fields must have been read (``readL3(_:_:)``) when the
    /// rule needs them.
    @inline(__always)
    func matches(_ r: UnsafePointer<CompiledACLRule>) -> Bool {
        let f = r.pointee.fields
        if f & CompiledACLRule.srcMAC != 0 && srcMAC != r.pointee.srcMAC { return false }
        if f & CompiledACLRule.dstMAC != 0 && dstMAC != r.pointee.dstMAC { return false }
        if f & CompiledACLRule.etherType != 0 && etherType != r.pointee.etherType { return false }
        if f & CompiledACLRule.vlan != 0 && vlan != r.pointee.vlan { return false }
        guard f & CompiledACLRule.needsL3 != 0 else { return true }
        if f & CompiledACLRule.proto != 0 && proto != Int16(r.pointee.proto) { return false }
        if f & (CompiledACLRule.srcIP | CompiledACLRule.dstIP) != 0 {
            guard family == r.pointee.family else { return false }
            if f & CompiledACLRule.srcIP != 0
                && (srcHigh & r.pointee.srcMaskHigh != r.pointee.srcHigh || srcLow & r.pointee.srcMaskLow != r.pointee.srcLow) { return false }
            if f & CompiledACLRule.dstIP != 0
                && (dstHigh & r.pointee.dstMaskHigh != r.pointee.dstHigh || dstLow & r.pointee.dstMaskLow != r.pointee.dstLow) { return false }
        }
        if f & CompiledACLRule.srcPort != 0 && !(hasPorts && srcPort >= r.pointee.srcPortLow && srcPort <= r.pointee.srcPortHigh) { return false }
        if f & CompiledACLRule.dstPort != 0 && !(hasPorts && dstPort >= r.pointee.dstPortLow && dstPort <= r.pointee.dstPortHigh) { return false }
        // Established: ACK or RST set (every segment of a connection but the opening SYN).
        if f & CompiledACLRule.established != 0 && !(proto == 6 && hasFlags && tcpFlags & 0x14 != 0) { return false }
        if f & CompiledACLRule.icmpType != 0 && !(hasICMP && icmpType == r.pointee.icmpType) { return false }
        return true
    }
}

/// Port ACLs (Hyper-V's `Add-VMNetworkAdapterAcl` / `-ExtendedAcl`): ordered rules per port and
/// direction, read from the port's ACL property (``PortProperty/aclKey``). `out` rules see the
/// frames a port sends (on ingress, before forwarding); `in` rules the frames delivered to it (on
/// egress, per destination, which a deny excludes). Rules are evaluated lowest priority first;
/// the first `allow` or `deny` that matches decides, `count` rules count and go on; when none
/// decides, the direction's default action applies. Every matching rule's hit counter counts.
/// Frames from the switch itself (trusted) bypass the ACL, as in Hyper-V.
///
/// The rules of each port and direction are compiled into one flat array of plain structs with a
/// parallel array of hit counters; the data path walks it without allocating or reference counting.
///
/// ## Concurrency model
/// Confined to the switch's queue, like every extension (see ``PortPolicyExtension``). Tables are
/// replaced on the control path, which never runs inside a batch. ``ruleHits(port:)`` is read on
/// that queue too.
public final class PortACLFilter: PortPolicyExtension {
    public static let extensionName = "acl"

    /// Per port and direction (index `port * 2 + (in ? 0 : 1)`): rules, their hits, their count.
    private var rules = UnsafeMutablePointer<UnsafeMutablePointer<CompiledACLRule>?>.allocate(capacity: 1)
    private var hits = UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>.allocate(capacity: 1)
    private var counts = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    /// 1 when the direction's default is deny.
    private var defaultDeny = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
    /// Frames that met the default action, per port and direction.
    private var defaultHits = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private var active = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
    /// Some rule of the slot reads L3/L4 fields.
    private var needsL3 = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
    private var capacity = 0
    private var activeIn = 0, activeOut = 0
    private var ruleReason = DropReason.runtFrame
    private var defaultReason = DropReason.runtFrame
    private var deniedIn: UInt64 = 0, deniedOut: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: [])
        super.init(name: Self.extensionName, extensionClass: .filtering)
        // The one-slot tables the properties start with are the empty switch's (allocate(0) would
        // allocate them again and leak these: found by the frames fuzz target's leak check).
        rules.initialize(to: nil); hits.initialize(to: nil); counts.initialize(to: 0)
        defaultDeny.initialize(to: false); defaultHits.initialize(to: 0); active.initialize(to: false)
        needsL3.initialize(to: false)
    }

    deinit { release() }

    private func allocate(_ ports: Int) {
        let n = max(ports * 2, 1)
        rules = .allocate(capacity: n); rules.initialize(repeating: nil, count: n)
        hits = .allocate(capacity: n); hits.initialize(repeating: nil, count: n)
        counts = .allocate(capacity: n); counts.initialize(repeating: 0, count: n)
        defaultDeny = .allocate(capacity: n); defaultDeny.initialize(repeating: false, count: n)
        defaultHits = .allocate(capacity: n); defaultHits.initialize(repeating: 0, count: n)
        active = .allocate(capacity: n); active.initialize(repeating: false, count: n)
        needsL3 = .allocate(capacity: n); needsL3.initialize(repeating: false, count: n)
        capacity = ports
        activeIn = 0
        activeOut = 0
    }

    private func release() {
        for k in 0..<max(capacity * 2, 1) {
            rules[k]?.deallocate()
            hits[k]?.deallocate()
        }
        rules.deallocate(); hits.deallocate(); counts.deallocate(); defaultDeny.deallocate(); defaultHits.deallocate(); active.deallocate()
        needsL3.deallocate()
    }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        release()
        allocate(capacity)
        ruleReason = sw.registerDropReason("denied by an ACL rule (acl)")
        defaultReason = sw.registerDropReason("denied by the ACL default (acl)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard index >= 0 && index < capacity else { return }
        let acl = port?.acl ?? PortACL()
        for direction in ACLDirection.allCases { install(index, direction, acl) }
    }

    private func slot(_ index: Int, _ d: ACLDirection) -> Int { index * 2 + (d == .in ? 0 : 1) }

    /// Compiles one direction's rules into a new table, keeping the hit counters of rules that stay
    /// (by id); a port that is gone (or new) starts from zero.
    private func install(_ index: Int, _ direction: ACLDirection, _ acl: PortACL) {
        let k = slot(index, direction)
        let list = acl.rules(direction)
        let oldRules = rules[k], oldHits = hits[k], oldCount = counts[k]
        var newRules: UnsafeMutablePointer<CompiledACLRule>? = nil
        var newHits: UnsafeMutablePointer<UInt64>? = nil
        var l3 = false
        if !list.isEmpty {
            let r = UnsafeMutablePointer<CompiledACLRule>.allocate(capacity: list.count)
            let h = UnsafeMutablePointer<UInt64>.allocate(capacity: list.count)
            for (j, rule) in list.enumerated() {
                (r + j).initialize(to: CompiledACLRule(rule))
                if r[j].fields & CompiledACLRule.needsL3 != 0 { l3 = true }
                var carried: UInt64 = 0
                if let oldRules, let oldHits {
                    for o in 0..<oldCount where oldRules[o].id == Int32(rule.id) { carried = oldHits[o] }
                }
                (h + j).initialize(to: carried)
            }
            newRules = r
            newHits = h
        }
        rules[k] = newRules
        hits[k] = newHits
        counts[k] = list.count
        needsL3[k] = l3
        oldRules?.deallocate()
        oldHits?.deallocate()
        let deny = acl.defaultAction(direction) == .deny
        if defaultDeny[k] != deny || list.isEmpty { defaultHits[k] = 0 }
        defaultDeny[k] = deny
        let on = !list.isEmpty || deny
        if active[k] != on {
            active[k] = on
            if direction == .in { activeIn += on ? 1 : -1 } else { activeOut += on ? 1 : -1 }
        }
    }

    /// Runs slot `k`'s rules on frame `i`: true to let it pass.
    @inline(__always)
    private func evaluate(_ k: Int, _ key: inout ACLFrameKey, _ batch: FrameBatch, _ i: Int, denied: inout Bool) -> Bool {
        let n = counts[k]
        if n > 0, let r = rules[k], let h = hits[k] {
            if needsL3[k] && !key.l3Read { key.readL3(batch, i) }
            var j = 0
            while j < n {
                if key.matches(UnsafePointer(r + j)) {
                    h[j] &+= 1
                    let action = r[j].action
                    if action == 0 { return true }
                    if action == 1 { denied = true; return false }
                }
                j += 1
            }
        }
        defaultHits[k] &+= 1
        return !defaultDeny[k]
    }

    override public func ingress(_ context: inout IngressContext) {
        guard activeOut > 0 else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let p = batch.sourcePortIndex(i)
            guard p >= 0, p < capacity, active[p * 2 + 1] else { continue }
            var key = ACLFrameKey(batch, i)
            var byRule = false
            if !evaluate(p * 2 + 1, &key, batch, i, denied: &byRule) {
                context.drop(i, reason: byRule ? ruleReason : defaultReason)
                deniedOut &+= 1
            }
        }
    }

    override public func egress(_ context: inout EgressContext) {
        guard activeIn > 0 else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) && !batch.isTrusted(i) {
            let dests = context.destinations(i)
            var key = ACLFrameKey(batch, i)
            for d in 0..<dests.count where !dests[d].isExcluded {
                let p = dests[d].portIndex
                guard p < capacity, active[p * 2] else { continue }
                var byRule = false
                if !evaluate(p * 2, &key, batch, i, denied: &byRule) {
                    context.exclude(i, destination: d, reason: byRule ? ruleReason : defaultReason)
                    deniedIn &+= 1
                }
            }
        }
    }

    /// A port with rules (or a default deny) in either direction: every frame from or to it is
    /// matched here, so the fast path must not take them.
    override public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        guard let index = sw.portIndex(of: port), index < capacity, active[index * 2] || active[index * 2 + 1] else { return .allowed }
        return .mustSeeEveryFrame(reason: "port ACL")
    }

    /// A port's rules in evaluation order with their hit counters, and each direction's default
    /// action with the frames that met it. nil for a port this extension does not know.
    public func ruleHits(port: PortID, in sw: VirtualSwitch) -> ACLReport? {
        guard let index = sw.portIndex(of: port), index < capacity, let tracked = ports[index] else { return nil }
        var out = ACLReport(rules: [], defaultIn: tracked.acl.defaultAction(.in), defaultOut: tracked.acl.defaultAction(.out),
                            defaultInHits: defaultHits[slot(index, .in)], defaultOutHits: defaultHits[slot(index, .out)])
        for d in ACLDirection.allCases {
            let k = slot(index, d)
            for (j, rule) in tracked.acl.rules(d).enumerated() {
                out.rules.append((rule, j < counts[k] ? hits[k]?[j] ?? 0 : 0))
            }
        }
        return out
    }

    override public var counters: [ExtensionCounter] {
        var rulesInForce = 0
        for k in 0..<(capacity * 2) { rulesInForce += counts[k] }
        return [ExtensionCounter("ports-in", UInt64(activeIn)), ExtensionCounter("ports-out", UInt64(activeOut)),
                ExtensionCounter("rules", UInt64(rulesInForce)), ExtensionCounter("denied-in", deniedIn),
                ExtensionCounter("denied-out", deniedOut)]
    }
}

/// A port's ACL with its counters, as ``PortACLFilter/ruleHits(port:in:)`` reports it.
public struct ACLReport: Sendable {
    public var rules: [(rule: ACLRule, hits: UInt64)]
    public var defaultIn: ACLAction
    public var defaultOut: ACLAction
    public var defaultInHits: UInt64
    public var defaultOutHits: UInt64
}
