import SwitchCore

/// Port isolation and private VLANs (Hyper-V's PVLAN modes, the Linux bridge's `isolated`), on
/// egress: within a VLAN, an isolated port exchanges frames only with promiscuous ports and the
/// uplink; a community port also with ports of its own community; ordinary ports with each other
/// and with promiscuous ports, not with isolated or community ports. The external port counts as
/// promiscuous. Frames the switch itself injects are not restricted.
public final class PortIsolation: PortPolicyExtension {
    public static let extensionName = "isolation"
    static let ordinary: UInt8 = 0, isolated: UInt8 = 1, community: UInt8 = 2, promiscuous: UInt8 = 3

    private var kind: UnsafeMutablePointer<UInt8>?
    private var communityID: UnsafeMutablePointer<UInt16>?
    /// Ports isolated or in a community: with none, nothing is restricted and the batch is skipped.
    private var restricted = 0
    private var reason = DropReason.runtFrame
    private var excluded: UInt64 = 0

    public init() {
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    deinit { kind?.deallocate(); communityID?.deallocate() }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        kind?.deallocate(); communityID?.deallocate()
        kind = .allocate(capacity: capacity)
        kind?.initialize(repeating: Self.ordinary, count: capacity)
        communityID = .allocate(capacity: capacity)
        communityID?.initialize(repeating: 0, count: capacity)
        restricted = 0
        reason = sw.registerDropReason("private VLAN isolation (isolated/pvlan)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard let kind, let communityID else { return }
        let was = kind[index] == Self.isolated || kind[index] == Self.community
        var k = Self.ordinary, c: UInt16 = 0
        if let port {
            switch port.security.pvlan {
            case .isolated?: k = Self.isolated
            case .community(let id)?: k = Self.community; c = id
            case .promiscuous?: k = Self.promiscuous
            case nil: k = port.type == .external ? Self.promiscuous : Self.ordinary
            }
        }
        kind[index] = k
        communityID[index] = c
        let now = k == Self.isolated || k == Self.community
        if now != was { restricted += now ? 1 : -1 }
    }

    /// One side's rule; a pair may talk when both sides allow it.
    @inline(__always)
    static func allows(_ a: UInt8, _ ac: UInt16, _ b: UInt8, _ bc: UInt16) -> Bool {
        switch a {
        case isolated: return b == promiscuous
        case community: return b == promiscuous || (b == community && ac == bc)
        default: return true
        }
    }

    override public func egress(_ context: inout EgressContext) {
        guard restricted > 0, let kind, let communityID else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let s = batch.sourcePortIndex(i)
            guard s >= 0 else { continue }
            let sk = kind[s], sc = communityID[s]
            let destinations = context.destinations(i)
            for d in 0..<destinations.count where !destinations[d].isExcluded {
                let t = destinations[d].portIndex
                let tk = kind[t], tc = communityID[t]
                if !(Self.allows(sk, sc, tk, tc) && Self.allows(tk, tc, sk, sc)) {
                    context.exclude(i, destination: d, reason: reason)
                    excluded &+= 1
                }
            }
        }
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("restricted-ports", UInt64(restricted)), ExtensionCounter("excluded", excluded)]
    }
}

/// Per-port MAC limit (`mac-limit`, settable at run time): a port may use at most N source MACs.
/// A frame from a new MAC while the port already has N learned is dropped on ingress; the switch's
/// MAC table holds the port to the same limit (a lowered limit flushes the port's entries).
public final class MACLimit: PortPolicyExtension {
    public static let extensionName = "mac-limit"
    let vmDefault: Int?
    private var limit: UnsafeMutablePointer<Int32>?
    private var limited = 0
    private var reason = DropReason.runtFrame
    private var dropped: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.limit("vm-default", extension: Self.extensionName, range: SecurityPolicy.macLimitRange, default: nil)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    deinit { limit?.deallocate() }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        limit?.deallocate()
        limit = .allocate(capacity: capacity)
        limit?.initialize(repeating: 0, count: capacity)
        limited = 0
        reason = sw.registerDropReason("MAC limit of the port reached (mac-limit)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard let limit else { return }
        let n = port.flatMap { $0.security.macLimit ?? ($0.isVM ? vmDefault : nil) } ?? 0
        if (n > 0) != (limit[index] > 0) { limited += n > 0 ? 1 : -1 }
        limit[index] = Int32(clamping: n)
        // Only a live port's slot: a deleted port's slot is reset by the switch when reused.
        if let port, sw.portIndex(of: port.id) == index { sw.macTable.setLimit(slot: UInt16(index), n > 0 ? n : nil) }
    }

    override public func detached(from sw: VirtualSwitch) {
        for index in ports.indices {
            if let p = ports[index], sw.portIndex(of: p.id) == index { sw.macTable.setLimit(slot: UInt16(index), nil) }
        }
        super.detached(from: sw)
    }

    override public func ingress(_ context: inout IngressContext) {
        guard limited > 0, let limit else { return }
        let batch = context.batch
        let table = context.sw.macTable
        let now = context.sw.now
        for i in context.frames where context.isLive(i) {
            let s = batch.sourcePortIndex(i)
            guard s >= 0, limit[s] > 0 else { continue }
            let h = batch.parsed(i)
            if let hit = table.lookup(h.source, vlan: h.vlan, now: now), Int(hit.slot) == s { continue }
            if table.entries(onSlot: UInt16(s)) >= Int(limit[s]) {
                context.drop(i, reason: reason)
                dropped &+= 1
            }
        }
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("limited-ports", UInt64(limited)), ExtensionCounter("dropped", dropped)]
    }
}
