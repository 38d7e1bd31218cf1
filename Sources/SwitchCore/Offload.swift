import SwitchTypes

// The fast path (an XDP program on each VM TAP in the data plane) is a cache of decisions the slow
// path has already taken: (ingress port, 802.1Q tag as on the wire, source MAC, destination MAC) →
// one egress port and the frame's egress form (tag kept, pushed or popped). The switch installs an
// entry only after it delivered such a frame itself, with every enabled extension allowing offload
// on both ports, the source learned on the ingress port, the destination learned on the egress
// port and the frame's bytes unchanged on the way but for its tag. It takes
// entries out again, before the request or batch that invalidates them returns, whenever anything
// those decisions depended on changes: a MAC forgotten or moved, a NIC disconnected, a port's
// properties, the extension stack or an extension's own answer (``VirtualSwitch/offloadChanged(port:)``).

/// Whether an extension lets the fast path forward a port's frames without showing them to it.
public enum OffloadPermission: Sendable, Equatable {
    /// The extension's decisions for this port depend only on (ingress port, VLAN, source MAC,
    /// destination MAC, egress port) and its settings, so the switch may cache them.
    case allowed
    /// The extension must see every frame from or to this port (capture, an ACL on L3/L4 fields,
    /// a policer, mirroring); `reason` is shown by `tapswitchctl show`.
    case mustSeeEveryFrame(reason: String)
}

/// Checks the fast path applies itself to the frames of a port, compiled from an extension whose
/// every per-frame decision they cover: a frame a check matches goes to the slow path (so the
/// extension sees it and decides), every other frame is one the extension lets through untouched.
/// Each check also sends to the slow path any IPv4/IPv6 frame whose headers, up to the fields it
/// reads, do not fit in the packet or the frame (the guards drop those as unreadable).
public struct OffloadChecks: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// dhcp-guard: UDP from port 67 (IPv4) or 547 (IPv6).
    public static let dhcpServer = OffloadChecks(rawValue: 1)
    /// router-guard: ICMPv4 redirects (type 5), ICMPv6 router advertisements (134) and redirects (137).
    public static let routerMessages = OffloadChecks(rawValue: 2)

    /// For `show`.
    public var names: [String] {
        (contains(.dhcpServer) ? ["DHCP server messages"] : []) + (contains(.routerMessages) ? ["router advertisements and redirects"] : [])
    }
}

/// One fast-path entry's match: what the fast path compares in a frame arriving on `ingress`.
public struct OffloadFlow: Hashable, Sendable {
    public let ingress: PortID
    /// The ingress port's dense index (``VirtualSwitch/portIndex(of:)``).
    public let ingressIndex: Int
    /// The 802.1Q tag on the wire: `0` untagged, else `0x1000 | VID` (a priority tag is `0x1000`).
    public let wireTag: UInt16
    public let source: MACAddress
    public let destination: MACAddress

    public init(ingress: PortID, ingressIndex: Int, wireTag: UInt16, source: MACAddress, destination: MACAddress) {
        self.ingress = ingress
        self.ingressIndex = ingressIndex
        self.wireTag = wireTag
        self.source = source
        self.destination = destination
    }
}

/// What a fast-path entry does to a frame's 802.1Q tag: what the slow path's egress step does for
/// the destination port (an access port's frame onto a trunk gets the VLAN's tag, a trunk's tagged
/// frame onto an access port loses it).
public enum OffloadTagAction: Sendable, Equatable {
    case unchanged
    /// Inserts a tag with this VID, priority 0.
    case push(VLANID)
    case pop
}

/// Where a fast-path entry sends its frames, and in which form.
public struct OffloadTarget: Sendable, Equatable {
    public let egress: PortID
    public let egressIndex: Int
    /// The switch's VLAN of the flow (the MAC table's), which can differ from the wire tag.
    public let vlan: VLANID
    public let egressTag: OffloadTagAction
    /// What the fast path checks before it forwards (the ingress port's ``OffloadChecks``).
    public let checks: OffloadChecks

    public init(egress: PortID, egressIndex: Int, vlan: VLANID, egressTag: OffloadTagAction = .unchanged, checks: OffloadChecks = []) {
        self.egress = egress
        self.egressIndex = egressIndex
        self.vlan = vlan
        self.egressTag = egressTag
        self.checks = checks
    }
}

/// Frames and bytes the fast path forwarded for one port, to add to the slow path's counters.
public struct FastPathCounters: Sendable, Equatable {
    public var framesIn: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var framesOut: UInt64 = 0
    public var bytesOut: UInt64 = 0
    public init(framesIn: UInt64 = 0, bytesIn: UInt64 = 0, framesOut: UInt64 = 0, bytesOut: UInt64 = 0) {
        self.framesIn = framesIn
        self.bytesIn = bytesIn
        self.framesOut = framesOut
        self.bytesOut = bytesOut
    }
}

/// The fast path the switch fills (the data plane's XDP maps; a test double in tests). Called only
/// on the switch's queue; ``install(_:to:)`` from the frame path, the rest from control steps.
public protocol OffloadDatapath: AnyObject {
    /// Adds or replaces an entry. False when the fast path refused it (full, port not attached).
    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool
    /// Removes an entry; when this returns, no further frame takes it.
    func remove(_ flow: OffloadFlow)
    /// The entry's last-use stamp (changes whenever the fast path forwarded a frame with it); nil
    /// when it is gone.
    func lastUse(_ flow: OffloadFlow) -> UInt64?
    /// What the fast path forwarded from and to the port at `portIndex`.
    func counters(portIndex: Int) -> FastPathCounters
}

extension SwitchExtension {
    /// Extensions that do not say otherwise see every frame: offloading skips them.
    public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        .mustSeeEveryFrame(reason: "\(name) sees every frame")
    }

    public func offloadChecks(for port: PortID, switch sw: VirtualSwitch) -> OffloadChecks { [] }
}

/// The switch's bookkeeping of the fast path: per port whether it may be used and why not, and
/// every installed entry (so it can take them out again without asking the fast path).
///
/// ## Concurrency model
/// Part of the ``VirtualSwitch`` it belongs to: confined to the same queue.
final class OffloadState {
    struct Installed {
        var target: OffloadTarget
        var lastUse: UInt64
    }

    var datapath: (any OffloadDatapath)?
    /// Why the switch has no fast path (shown per port).
    var offReason = "offload is off"
    /// Per dense port slot: the data plane's reason this port has no fast path (nil: it has one).
    var unsupported: [String?]
    /// Per dense port slot: why frames of this port are not offloaded (nil: they may be).
    var reasons: [String?]
    /// Per dense port slot: what the fast path checks in its frames for the extensions.
    var checks: [OffloadChecks]
    /// Per dense port slot, read per frame: ``reasons`` is nil.
    let allowed: UnsafeMutablePointer<Bool>
    var flows: [OffloadFlow: Installed] = [:]
    let maxFlows: Int
    /// (MAC, VLAN) keys the MAC table forgot since the last settle, while entries exist.
    var forgotten: Set<UInt64> = []

    init(ports: Int, maxFlows: Int) {
        self.maxFlows = maxFlows
        unsupported = Array(repeating: "not attached to the fast path", count: ports)
        reasons = Array(repeating: "offload is off", count: ports)
        checks = Array(repeating: [], count: ports)
        allowed = .allocate(capacity: ports)
        allowed.initialize(repeating: false, count: ports)
        flows.reserveCapacity(maxFlows)
    }

    deinit { allowed.deallocate() }
}

extension VirtualSwitch {
    // MARK: - Offload: the data plane's side

    /// Sets (or, with nil, removes) the fast path the switch fills; `offReason` says why there is
    /// none. Every entry of the previous fast path is removed first.
    public func setOffloadDatapath(_ datapath: (any OffloadDatapath)?, offReason: String = "offload is off") {
        removeFlows { _, _ in true }
        offload.datapath = datapath
        offload.offReason = offReason
        recomputeOffload()
    }

    /// Tells the switch whether `port`'s device has the fast path attached (nil reason: it has).
    public func setOffloadSupport(_ port: PortID, unsupportedReason: String?) {
        guard let r = records[port] else { return }
        offload.unsupported[Int(r.slot)] = unsupportedReason
        recomputeOffload(slot: r.slot)
    }

    /// Number of fast-path entries installed.
    public var offloadedFlowCount: Int { offload.flows.count }

    /// What the fast path checks in `port`'s frames for the extensions (`show`).
    public func offloadChecks(of port: PortID) -> OffloadChecks {
        guard let r = records[port] else { return [] }
        return offload.checks[Int(r.slot)]
    }

    /// Installed entries whose frames come from `port` and go to it (`show`).
    public func offloadedFlowCounts(of port: PortID) -> (from: Int, to: Int) {
        var from = 0, to = 0
        for (flow, installed) in offload.flows {
            if flow.ingress == port { from += 1 }
            if installed.target.egress == port { to += 1 }
        }
        return (from, to)
    }

    /// The installed entries (tests and diagnostics).
    public var offloadedFlows: [(flow: OffloadFlow, target: OffloadTarget)] {
        offload.flows.map { ($0.key, $0.value.target) }
    }

    // MARK: - Offload: the extensions' side

    /// An extension's ``SwitchExtension/offloadPermission(for:switch:)`` for `port` (every port
    /// when nil) may have changed, or its policy did: the port's entries are removed from the fast
    /// path before this returns, and the port's permission is asked again.
    public func offloadChanged(port: PortID? = nil) {
        if let port {
            if let r = records[port] { recomputeOffload(slot: r.slot) }
        } else {
            recomputeOffload()
        }
    }

    /// Whether frames of `port` may take the fast path, or why not.
    public func offloadStatus(of port: PortID) -> OffloadPermission? {
        guard let r = records[port] else { return nil }
        return offload.reasons[Int(r.slot)].map { .mustSeeEveryFrame(reason: $0) } ?? .allowed
    }

    // MARK: - Internals

    /// With `keepingAllowed`, the entries of ports that may still be offloaded stay: for a change
    /// that alters no forwarding decision (a capture extension enabled or disabled: the switch
    /// refuses its drops, rewrites, clones and exclusions), so a capture takes only the ports it
    /// must see off the fast path.
    func recomputeOffload(keepingAllowed: Bool = false) {
        for r in records.values { recomputeOffload(slot: r.slot, keepingAllowed: keepingAllowed) }
    }

    /// Asks again whether `slot`'s frames may be offloaded, and removes its entries in any case
    /// (whatever changed may have changed the decisions they cache), unless `keepingAllowed` and
    /// they still may be, with the same checks.
    func recomputeOffload(slot: UInt16, keepingAllowed: Bool = false) {
        let s = Int(slot)
        var reason: String?
        if offload.datapath == nil {
            reason = offload.offReason
        } else if let why = offload.unsupported[s] {
            reason = why
        }
        var checks: OffloadChecks = []
        if reason == nil, let r = slotRecords[s] {
            for ext in stack {
                if case .mustSeeEveryFrame(let why) = ext.offloadPermission(for: r.params.id, switch: self) {
                    reason = "\(ext.name): \(why)"
                    break
                }
                checks.formUnion(ext.offloadChecks(for: r.params.id, switch: self))
            }
        }
        let sameChecks = offload.checks[s] == checks
        offload.checks[s] = checks
        offload.reasons[s] = reason
        offload.allowed[s] = reason == nil
        if reason != nil || !keepingAllowed || !sameChecks { removeFlows(touching: slot) }
        settleOffload()
    }

    /// The port slot is free again (PORT_DELETE): back to "not attached".
    func resetOffload(slot: UInt16) {
        removeFlows(touching: slot)
        offload.unsupported[Int(slot)] = "not attached to the fast path"
        offload.reasons[Int(slot)] = offload.datapath == nil ? offload.offReason : "not attached to the fast path"
        offload.allowed[Int(slot)] = false
    }

    func removeFlows(touching slot: UInt16) {
        let s = Int(slot)
        removeFlows { flow, installed in flow.ingressIndex == s || installed.target.egressIndex == s }
    }

    func removeFlows(where predicate: (OffloadFlow, OffloadState.Installed) -> Bool) {
        guard !offload.flows.isEmpty else { return }
        var gone: [OffloadFlow] = []
        for (flow, installed) in offload.flows where predicate(flow, installed) { gone.append(flow) }
        for flow in gone {
            offload.datapath?.remove(flow)
            offload.flows[flow] = nil
        }
    }

    /// The MAC table forgot or moved (`mac`, `vlan`): entries from or to it are stale.
    func offloadForget(_ mac: MACAddress, _ vlan: VLANID) {
        guard !offload.flows.isEmpty else { return }
        offload.forgotten.insert(mac.rawValue | UInt64(vlan & 0x0FFF) << 48)
    }

    /// Removes the entries of the MACs forgotten since the last call.
    func settleOffload() {
        guard !offload.forgotten.isEmpty else { return }
        let keys = offload.forgotten
        offload.forgotten.removeAll(keepingCapacity: true)
        removeFlows { flow, installed in
            let v = UInt64(installed.target.vlan & 0x0FFF) << 48
            return keys.contains(flow.source.rawValue | v) || keys.contains(flow.destination.rawValue | v)
        }
    }

    /// Refreshes in the MAC table the sources of the entries the fast path used since the last
    /// call (their frames never reach the slow path's learning), before it ages addresses out.
    func refreshOffloadedSources() {
        guard let datapath = offload.datapath, !offload.flows.isEmpty else { return }
        var used: [(OffloadFlow, UInt64)] = []
        for (flow, installed) in offload.flows {
            if let stamp = datapath.lastUse(flow), stamp != installed.lastUse { used.append((flow, stamp)) }
        }
        for (flow, stamp) in used {
            guard let installed = offload.flows[flow] else { continue }
            offload.flows[flow]?.lastUse = stamp
            macTable.learn(flow.source, vlan: installed.target.vlan, port: flow.ingress, slot: UInt16(flow.ingressIndex), now: now)
        }
    }

    /// Frame `i` was delivered by the slow path to exactly one port, `slot`: install its decision
    /// in the fast path when it is one the fast path can repeat exactly. Called before the frame
    /// is put in its egress form.
    func considerOffload(_ batch: FrameBatch, _ i: Int, to slot: UInt16) {
        let source = batch.sourceSlot[i]
        guard source != UInt16.max, offload.allowed[Int(source)], offload.allowed[Int(slot)],
              batch.state[i] == .live, let datapath = offload.datapath else { return }
        let h = batch.headers[i]
        guard !h.destination.isMulticast, !h.isQinQ, !h.isServiceTagged else { return }
        // The egress form as ``conform(_:_:to:)`` makes it: kept, a tag pushed (priority 0) or
        // popped. A tag whose VID is rewritten (a priority tag onto a trunk) stays on the slow path.
        let info = slots[Int(slot)]
        let vid = h.vlan
        let wantTag = info.vlanMode == SlotInfo.trunk && vid != info.nativeVLAN && vid != 0
        let tag: OffloadTagAction
        if wantTag {
            if !h.isTagged {
                tag = .push(vid)
            } else {
                guard h.vlanTCI & 0x0FFF == vid else { return }
                tag = .unchanged
            }
        } else {
            tag = h.isTagged ? .pop : .unchanged
        }
        // Learning, moves, limits and guards stay on the slow path: the source must be learned on
        // the ingress port, the destination on the egress port.
        let now = self.now
        guard macTable.lookup(h.source, vlan: vid, now: now)?.slot == source,
              macTable.lookup(h.destination, vlan: vid, now: now)?.slot == slot else { return }
        let flow = OffloadFlow(ingress: batch.sourcePort[i], ingressIndex: Int(source),
                               wireTag: h.isTagged ? 0x1000 | (h.vlanTCI & 0x0FFF) : 0,
                               source: h.source, destination: h.destination)
        if offload.flows[flow] != nil { return }
        guard offload.flows.count < offload.maxFlows else { return }
        let target = OffloadTarget(egress: slots[Int(slot)].port, egressIndex: Int(slot), vlan: vid, egressTag: tag,
                                   checks: offload.checks[Int(source)])
        if datapath.install(flow, to: target) {
            offload.flows[flow] = OffloadState.Installed(target: target, lastUse: 0)
        }
    }
}
