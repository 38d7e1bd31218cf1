/// The switch: ports, NICs, the Hyper-V lifecycle, port properties, the extension stack, and the
/// data path that moves batches of frames through them.
///
/// ## Concurrency model
/// A `VirtualSwitch` is confined to one serial context (the packet loop's queue, or a test): it
/// holds no locks and is not `Sendable`. Control requests (lifecycle, properties, extensions)
/// and batches are serialised by that owner, so a control step never runs while a batch is in
/// the stack. Frames that outlive a batch (pended by an extension) hold NIC references, which is
/// what makes `NIC_DELETE` wait.
///
/// ## Lifecycle
/// Start: `PORT_CREATE` → (properties) → `NIC_CREATE` → `NIC_CONNECT`.
/// Stop: `NIC_DISCONNECT` → (references drain) → `NIC_DELETE` → `PORT_TEARDOWN` → (port
/// references drain) → `PORT_DELETE`. Each step goes down the extension stack, top to bottom.
/// A step out of order is refused with ``SwitchError/Code/invalidState`` and changes nothing.
/// One deliberate addition to Hyper-V: a disconnected NIC may connect again (QEMU restarted on
/// the same TAP), so the port and its policies survive a guest restart.
public final class VirtualSwitch {
    public let configuration: SwitchConfiguration
    /// Current time in seconds on a monotonic clock; the owner advances it (MAC aging).
    public var now: UInt64 = 0
    /// Monotonic time in nanoseconds, set by the owner once per batch (rate limiters read it: one
    /// clock read per batch, not per frame).
    public var clockNanoseconds: UInt64 = 0
    /// Unknown-unicast policy of the built-in forwarding; may change at run time.
    public var unknownUnicast: UnknownUnicastPolicy

    /// Lifecycle events, in order, as they complete.
    public var onEvent: ((LifecycleEvent) -> Void)?
    /// Every drop and exclusion, when set (costs a call per drop; leave nil on the fast path if
    /// counters are enough).
    public var onDrop: ((DropReport) -> Void)?
    /// Rule violations by extensions (a capture extension trying to drop, a veto of a
    /// non-vetoable request, ...): refused and reported here.
    public var onDiagnostic: ((String) -> Void)?

    public let macTable: MACTable

    var records: [PortID: PortRecord] = [:]
    var slotRecords: [PortRecord?]
    var nextPortID: UInt32 = 1
    var freeSlots: [UInt16]
    let slots: UnsafeMutablePointer<SlotInfo>
    let trunkBitmaps: UnsafeMutablePointer<UInt64>  // 64 words (4096 bits) per slot
    let connectedSlots: UnsafeMutablePointer<UInt16>
    var connectedCount = 0
    let txLists: UnsafeMutablePointer<UInt16>
    let txCounts: UnsafeMutablePointer<Int>
    let touched: UnsafeMutablePointer<UInt16>
    /// Per slot: its queue was full in this batch (copies do not go there); the slots so marked.
    let txFull: UnsafeMutablePointer<Bool>
    let txFullSlots: UnsafeMutablePointer<UInt16>
    var txFullCount = 0

    var stack: [any SwitchExtension] = []
    var forwardingIndex: Int? = nil
    /// The enabled capture extensions : they also see drops and deliveries.
    /// Empty when none is enabled, so the frame path then pays one check.
    var captureTaps: [any SwitchExtension] = []
    var controlBusy = false
    /// The extension whose control callback is running: a NIC reference taken there is its.
    var callbackExtension: String?
    /// True while a batch is in the stack: lifecycle steps wait until it is done.
    var inBatch = false
    /// A reference drained while a control callback or a batch was running: settle deletes after it.
    var needsSettle = false
    var resumeQueue: [PendedFrame] = []
    /// Sources of resumed frames in the batch being processed (their NIC references).
    var heldReferences: [PortID] = []
    /// The monotonic clock extension timers run on, in nanoseconds (the same time base as
    /// ``clockNanoseconds``, read now rather than at the batch's start). By default it returns
    /// ``clockNanoseconds`` (a manual clock, as in `EmbeddedSwitch`); the packet loop sets it to the
    /// host's monotonic clock.
    public var clock: () -> UInt64 = { 0 }
    var timers: [TimerEntry] = []
    var nextTimerID: UInt64 = 1
    var firingTimers = false
    var reasonNames: [String] = DropReason.builtinNames
    /// Who reports drops: the core's stages (``coreReporters``), then every extension ever enabled,
    /// by name (kept after a disable so its counts keep their name).
    var reporterNames: [String] = VirtualSwitch.coreReporters
    /// The reporter id of each stack position (rebuilt with the stack).
    var stackReporters: [UInt16] = []
    /// Drop kinds, (reason, reporter) pairs in order of first occurrence; a port's drop counters are
    /// indexed by kind * 2 + direction. Counted per kind rather than per reason x reporter so a port
    /// holds counters only for what actually happened.
    var dropKinds: [(reason: UInt16, reporter: UInt16)] = []
    /// (reporter * kindStride + reason) -> kind, or -1.
    var kindIndex: [Int32] = []
    var kindStride = 0
    var switchDrops: [UInt64] = []
    /// Multicast, broadcast and unknown-unicast floods that found no other port (a VM alone in its
    /// VLAN): not drops, since nothing was lost, but counted so the traffic is not invisible.
    public internal(set) var floodsWithoutPort: UInt64 = 0
    /// Batches run through the stack.
    public internal(set) var batches: UInt64 = 0
    public internal(set) var injectedFrames: UInt64 = 0
    /// The fast path's bookkeeping (see Offload.swift).
    let offload: OffloadState

    public init(configuration: SwitchConfiguration = SwitchConfiguration()) {
        precondition(configuration.maxPorts > 0 && configuration.maxPorts < Int(UInt16.max))
        self.configuration = configuration
        unknownUnicast = configuration.unknownUnicast
        let n = configuration.maxPorts
        macTable = MACTable(limit: configuration.macTableSize, perPortLimit: configuration.macLimitPerPort,
                            agingTime: configuration.macAgingSeconds, portSlots: n)
        slotRecords = Array(repeating: nil, count: n)
        freeSlots = (0..<UInt16(n)).reversed().map { $0 }
        slots = .allocate(capacity: n)
        slots.initialize(repeating: SlotInfo(), count: n)
        trunkBitmaps = .allocate(capacity: n * 64)
        trunkBitmaps.initialize(repeating: 0, count: n * 64)
        connectedSlots = .allocate(capacity: n)
        connectedSlots.initialize(repeating: 0, count: n)
        txLists = .allocate(capacity: n * configuration.batchCapacity)
        txLists.initialize(repeating: 0, count: n * configuration.batchCapacity)
        txCounts = .allocate(capacity: n)
        txCounts.initialize(repeating: 0, count: n)
        touched = .allocate(capacity: n)
        touched.initialize(repeating: 0, count: n)
        txFull = .allocate(capacity: n)
        txFull.initialize(repeating: false, count: n)
        txFullSlots = .allocate(capacity: n)
        txFullSlots.initialize(repeating: 0, count: n)
        offload = OffloadState(ports: n, maxFlows: configuration.maxOffloadedFlows)
        // Room for the usual kinds up front, so the first drops do not allocate on the packet loop.
        dropKinds.reserveCapacity(128)
        rebuildKindIndex(stride: 64, reporters: 16)
        switchDrops = Array(repeating: 0, count: 256)
        macTable.onForget = { [unowned self] mac, vlan in self.offloadForget(mac, vlan) }
        clock = { [unowned self] in clockNanoseconds }
    }

    deinit {
        slots.deallocate(); trunkBitmaps.deallocate(); connectedSlots.deallocate()
        txLists.deallocate(); txCounts.deallocate(); touched.deallocate(); txFull.deallocate(); txFullSlots.deallocate()
    }

    /// A batch sized for this switch (its capacity and destination limit).
    public func makeBatch(slotSize: Int = 65_536 + 2 * FrameBatch.headroom) -> FrameBatch {
        FrameBatch(capacity: configuration.batchCapacity, slotSize: slotSize, maxDestinations: configuration.maxPorts)
    }

    // MARK: - Queries

    /// All ports that are not deleted, by id.
    public var ports: [PortParameters] { records.values.map(\.params).sorted { $0.id < $1.id } }
    public func port(_ id: PortID) -> PortParameters? { records[id]?.params }
    public func port(named name: String) -> PortParameters? { records.values.first { $0.params.name == name }?.params }
    public func nic(of port: PortID) -> NICParameters? { records[port]?.nic }
    /// The port's dense index, `0..<configuration.maxPorts`: stable while the port exists and
    /// reused after its PORT_DELETE. Extensions key flat per-port tables with it (frames carry it as
    /// ``FrameBatch/sourcePortIndex(_:)`` and ``Destination/portIndex``). Known once PORT_CREATE
    /// has completed.
    public func portIndex(of port: PortID) -> Int? { records[port].map { Int($0.slot) } }
    /// Enumeration of a port's properties (Hyper-V's PORT_PROPERTY_ENUM).
    public func properties(of port: PortID) -> [PortProperty] { records[port]?.properties ?? [] }
    /// Outstanding NIC references (extension references plus pended frames).
    public func nicReferenceCount(of port: PortID) -> Int { records[port]?.nicReferences ?? 0 }
    public func portReferenceCount(of port: PortID) -> Int { records[port]?.portReferences ?? 0 }

    public func counters(of port: PortID) -> PortCounters? {
        guard let r = records[port] else { return nil }
        let s = slots[Int(r.slot)]
        var c = PortCounters()
        c.framesIn = s.framesIn; c.bytesIn = s.bytesIn; c.framesOut = s.framesOut; c.bytesOut = s.bytesOut
        if let datapath = offload.datapath, offload.unsupported[Int(r.slot)] == nil {
            // Frames the fast path forwarded never reached the slow path's counters.
            let f = datapath.counters(portIndex: Int(r.slot))
            c.framesIn &+= f.framesIn; c.bytesIn &+= f.bytesIn; c.framesOut &+= f.framesOut; c.bytesOut &+= f.bytesOut
        }
        c.drops = dropTable(r.drops)
        return c
    }

    /// Drops of frames whose source was the switch itself (injected frames).
    public var switchDropCounters: [PortCounters.DropKey: UInt64] { dropTable(switchDrops) }

    /// Drop reporters for the core's own stages (admission: parsing, VLAN and source checks;
    /// forwarding: the built-in learning forwarder; delivery: egress and transmit), as they appear
    /// in drop counters and reports beside extension names.
    public static let coreReporters = ["core:admission", "core:forwarding", "core:delivery"]

    func dropTable(_ counts: [UInt64]) -> [PortCounters.DropKey: UInt64] {
        var out: [PortCounters.DropKey: UInt64] = [:]
        for (k, v) in counts.enumerated() where v > 0 && k >> 1 < dropKinds.count {
            let kind = dropKinds[k >> 1]
            out[PortCounters.DropKey(direction: Direction(rawValue: UInt8(k & 1))!, reason: reasonNames[Int(kind.reason)],
                                     reporter: reporterNames[Int(kind.reporter)])] = v
        }
        return out
    }

    public func macEntries() -> [MACTable.Entry] { macTable.entries(now: now) }

    /// Registers a drop reason text and returns its code (idempotent). Extensions call this once,
    /// typically in ``SwitchExtension/attached(to:)``.
    public func registerDropReason(_ text: String) -> DropReason {
        if let i = reasonNames.firstIndex(of: text) { return DropReason(code: UInt16(i)) }
        reasonNames.append(text)
        if reasonNames.count > kindStride { rebuildKindIndex(stride: kindStride * 2, reporters: reporterNames.count + 8) }
        return DropReason(code: UInt16(reasonNames.count - 1))
    }

    public func text(of reason: DropReason) -> String { reasonNames[Int(reason.code)] }

    // MARK: - Lifecycle: start

    /// PORT_CREATE. Returns the new port's id.
    @discardableResult
    public func createPort(name: String, friendlyName: String = "", type: PortType, isRestore: Bool = false) throws(SwitchError) -> PortID {
        try checkNotBusy("PORT_CREATE")
        guard !name.isEmpty else { throw SwitchError(.invalidArgument, "PORT_CREATE refused: port name is empty") }
        if let other = records.values.first(where: { $0.params.name == name }) {
            throw SwitchError(.exists, "PORT_CREATE refused: a port named \(name) already exists (port \(other.params.id))")
        }
        guard !freeSlots.isEmpty else {
            throw SwitchError(.limitReached, "PORT_CREATE refused for \(name): the switch has its maximum of \(configuration.maxPorts) ports")
        }
        while records[PortID(nextPortID)] != nil || nextPortID == 0 { nextPortID &+= 1 }
        let params = PortParameters(id: PortID(nextPortID), name: name, friendlyName: friendlyName.isEmpty ? name : friendlyName,
                                    type: type, state: .created)
        let request = OIDRequest(kind: .portCreate, port: params, nic: nil, property: nil, isRestore: isRestore)
        try passDownOrThrow(request)
        nextPortID &+= 1
        // Take the slot only now: a deferred delete that settled while the request was in the stack
        // may have pushed a freed slot on top.
        let slot = freeSlots.removeLast()
        let record = PortRecord(params: params, slot: slot)
        record.drops = Array(repeating: 0, count: max(16, dropKinds.count * 2))
        records[params.id] = record
        slotRecords[Int(slot)] = record
        slots[Int(slot)] = SlotInfo(port: params.id, inUse: true, isUplink: type == .external)
        setVLANMode(slot: slot, VLANPolicy.defaultPolicy(for: type))
        // A VM's addresses stay with its port: no other port's traffic moves them (MAC stealing).
        macTable.setPinned(slot: slot, type == .synthetic || type == .emulated)
        macTable.setLimit(slot: slot, nil)
        recomputeOffload(slot: slot)
        emit(.portCreate, record, isRestore: isRestore)
        return params.id
    }

    /// NIC_CREATE on an existing port (NIC index 0). Vetoable.
    public func createNIC(on port: PortID, _ nic: NICParameters, isRestore: Bool = false) throws(SwitchError) {
        try checkNotBusy("NIC_CREATE")
        let r = try record(port, for: "NIC_CREATE")
        guard r.params.state == .created, !r.removing else {
            throw SwitchError(.invalidState, "NIC_CREATE refused for port \(describe(r)): port is \(r.removing ? "being removed" : r.params.state.rawValue)")
        }
        if let existing = r.nic {
            throw SwitchError(.invalidState, "NIC_CREATE refused for port \(describe(r)): it already has NIC \(existing.index) (\(existing.state.rawValue))")
        }
        guard nic.index == 0 else {
            throw SwitchError(.invalidArgument, "NIC_CREATE refused for port \(describe(r)): NIC index \(nic.index) (only index 0 is supported)")
        }
        guard nic.mtu >= 68 && nic.mtu <= 65535 else {
            throw SwitchError(.invalidArgument, "NIC_CREATE refused for port \(describe(r)): MTU \(nic.mtu) out of range 68...65535")
        }
        var params = nic
        params.port = port
        params.state = .created
        let request = OIDRequest(kind: .nicCreate, port: r.params, nic: params, property: nil, isRestore: isRestore)
        try passDownOrThrow(request)
        r.nic = params
        slots[Int(r.slot)].acceptsIngress = true
        emit(.nicCreate, r, isRestore: isRestore)
    }

    /// NIC_CONNECT: the VM side is attached; frames may now be delivered to the NIC.
    public func connectNIC(on port: PortID, isRestore: Bool = false) throws(SwitchError) {
        try checkNotBusy("NIC_CONNECT")
        let r = try record(port, for: "NIC_CONNECT")
        guard var nic = r.nic else { throw SwitchError(.invalidState, "NIC_CONNECT refused for port \(describe(r)): no NIC was created") }
        guard nic.state == .created || nic.state == .disconnected, !r.removing, !r.nicDeleteDeferred else {
            throw SwitchError(.invalidState, "NIC_CONNECT refused for port \(describe(r)): NIC is \(r.removing || r.nicDeleteDeferred ? "being deleted" : nic.state.rawValue)")
        }
        if let pended = r.pendedDisconnect {
            throw SwitchError(.invalidState, "NIC_CONNECT refused for port \(describe(r)): its NIC_DISCONNECT is still pended by extension \(pended.extensionName)")
        }
        nic.state = .connected
        r.nic = nic
        passDown(OIDRequest(kind: .nicConnect, port: r.params, nic: nic, property: nil, isRestore: isRestore))
        slots[Int(r.slot)].acceptsIngress = true
        slots[Int(r.slot)].connected = true
        connectedSlots[connectedCount] = r.slot
        connectedCount += 1
        emit(.nicConnect, r, isRestore: isRestore)
    }

    /// NIC_UPDATED (MTU or MAC change) on a connected NIC.
    public func updateNIC(on port: PortID, mtu: UInt32? = nil, currentMAC: MACAddress? = nil, permanentMAC: MACAddress? = nil) throws(SwitchError) {
        try checkNotBusy("NIC_UPDATED")
        let r = try record(port, for: "NIC_UPDATED")
        guard var nic = r.nic, nic.state == .connected else {
            throw SwitchError(.invalidState, "NIC_UPDATED refused for port \(describe(r)): NIC is \(r.nic?.state.rawValue ?? "absent"), not connected")
        }
        if let mtu {
            guard mtu >= 68 && mtu <= 65535 else { throw SwitchError(.invalidArgument, "NIC_UPDATED refused for port \(describe(r)): MTU \(mtu) out of range 68...65535") }
            nic.mtu = mtu
        }
        if let currentMAC { nic.currentMAC = currentMAC }
        if let permanentMAC { nic.permanentMAC = permanentMAC }
        guard nic != r.nic else { return }  // nothing changed: duplicate notifications are harmless
        r.nic = nic
        passDown(OIDRequest(kind: .nicUpdated, port: r.params, nic: nic, property: nil, isRestore: false))
        // A new MAC changes what the guards let through (mac-spoof-guard): entries cached under the
        // old one go, and the extensions are asked again, before the event.
        recomputeOffload(slot: r.slot)
        emit(.nicUpdated, r, isRestore: false)
    }

    /// PORT_UPDATED (friendly name).
    public func updatePort(_ port: PortID, friendlyName: String) throws(SwitchError) {
        try checkNotBusy("PORT_UPDATED")
        let r = try record(port, for: "PORT_UPDATED")
        guard r.params.state == .created else {
            throw SwitchError(.invalidState, "PORT_UPDATED refused for port \(describe(r)): port is \(r.params.state.rawValue)")
        }
        guard r.params.friendlyName != friendlyName else { return }
        r.params.friendlyName = friendlyName
        passDown(OIDRequest(kind: .portUpdated, port: r.params, nic: r.nic, property: nil, isRestore: false))
        emit(.portUpdated, r, isRestore: false)
    }

    // MARK: - Lifecycle: stop

    /// NIC_DISCONNECT: from now on nothing is delivered to, injected toward or addressed to the NIC.
    public func disconnectNIC(on port: PortID, isRestore: Bool = false) throws(SwitchError) {
        try checkNotBusy("NIC_DISCONNECT")
        let r = try record(port, for: "NIC_DISCONNECT")
        guard var nic = r.nic, nic.state == .connected || nic.state == .created else {
            throw SwitchError(.invalidState, "NIC_DISCONNECT refused for port \(describe(r)): NIC is \(r.nic?.state.rawValue ?? "absent")")
        }
        let wasConnected = nic.state == .connected
        nic.state = .disconnected
        r.nic = nic
        // Stop ingress before telling extensions. Delivery stops once the request completes (no batch
        // runs meanwhile, unless the forwarding extension pends it to flush what it holds for the NIC).
        slots[Int(r.slot)].acceptsIngress = false
        removeFlows(touching: r.slot)
        passDown(OIDRequest(kind: .nicDisconnect, port: r.params, nic: nic, property: nil, isRestore: isRestore))
        if let pended = r.pendedDisconnect {
            // The wait holds the NIC like a reference: NIC_DELETE (and a removal) waits for it.
            pended.wasConnected = wasConnected
            r.nicReferences += 1
            r.nicHolders[pended.holder, default: 0] += 1
            return
        }
        finishDisconnect(r, wasConnected: wasConnected, isRestore: isRestore)
    }

    /// The end of NIC_DISCONNECT: nothing is delivered to the NIC any more.
    func finishDisconnect(_ r: PortRecord, wasConnected: Bool, isRestore: Bool) {
        if wasConnected {
            slots[Int(r.slot)].connected = false
            removeConnected(r.slot)
        }
        macTable.flush(portSlot: r.slot)
        // No fast-path frame toward or from the NIC after this either.
        removeFlows(touching: r.slot)
        settleOffload()
        emit(.nicDisconnect, r, isRestore: isRestore)
    }

    /// NIC_DELETE. Returns false when in-flight frames or references hold the NIC: the delete then
    /// happens by itself when the last one completes.
    @discardableResult
    public func deleteNIC(on port: PortID, isRestore: Bool = false) throws(SwitchError) -> Bool {
        try checkNotBusy("NIC_DELETE")
        let r = try record(port, for: "NIC_DELETE")
        guard let nic = r.nic, nic.state == .disconnected else {
            throw SwitchError(.invalidState, "NIC_DELETE refused for port \(describe(r)): NIC is \(r.nic?.state.rawValue ?? "absent"), not disconnected")
        }
        if r.nicReferences > 0 {
            r.nicDeleteDeferred = true
            return false
        }
        finishNICDelete(r, isRestore: isRestore)
        return true
    }

    /// PORT_TEARDOWN: the port's NIC must already be deleted.
    public func teardownPort(_ port: PortID, isRestore: Bool = false) throws(SwitchError) {
        try checkNotBusy("PORT_TEARDOWN")
        let r = try record(port, for: "PORT_TEARDOWN")
        guard r.params.state == .created else {
            throw SwitchError(.invalidState, "PORT_TEARDOWN refused for port \(describe(r)): port is \(r.params.state.rawValue)")
        }
        if let nic = r.nic {
            throw SwitchError(.invalidState, "PORT_TEARDOWN refused for port \(describe(r)): its NIC is \(nic.state.rawValue); delete the NIC first")
        }
        r.params.state = .tearingDown
        passDown(OIDRequest(kind: .portTeardown, port: r.params, nic: nil, property: nil, isRestore: isRestore))
        emit(.portTeardown, r, isRestore: isRestore)
    }

    /// PORT_DELETE. Returns false when port references hold it: the delete then happens by itself.
    @discardableResult
    public func deletePort(_ port: PortID, isRestore: Bool = false) throws(SwitchError) -> Bool {
        try checkNotBusy("PORT_DELETE")
        let r = try record(port, for: "PORT_DELETE")
        guard r.params.state == .tearingDown else {
            throw SwitchError(.invalidState, "PORT_DELETE refused for port \(describe(r)): port is \(r.params.state.rawValue), not torn down")
        }
        if r.portReferences > 0 {
            r.portDeleteDeferred = true
            return false
        }
        finishPortDelete(r, isRestore: isRestore)
        return true
    }

    /// Runs the whole stop sequence from wherever the port is: NIC_DISCONNECT (unless already
    /// disconnected), NIC_DELETE, PORT_TEARDOWN, PORT_DELETE, each as soon as references allow.
    /// `completion` runs after PORT_DELETE (at once, or later when the last reference drains).
    /// Returns true if the port is already deleted.
    @discardableResult
    public func removePort(_ port: PortID, isRestore: Bool = false, completion: (() -> Void)? = nil) throws(SwitchError) -> Bool {
        try checkNotBusy("port removal")
        let r = try record(port, for: "port removal")
        if r.removing {
            if let completion {
                let previous = r.removalCompletion
                r.removalCompletion = { previous?(); completion() }
            }
            return false
        }
        r.removing = true
        r.removalIsRestore = isRestore
        r.removalCompletion = completion
        return advanceRemoval(r)
    }

    /// Creates a port with its NIC and properties as one step (VM start). If anything is vetoed or
    /// refused, what was already created is torn down again and the error is rethrown, so no
    /// half-created port remains.
    @discardableResult
    public func createPort(name: String, friendlyName: String = "", type: PortType, nic: NICParameters,
                           properties: [PortProperty] = [], isRestore: Bool = false) throws(SwitchError) -> PortID {
        let id = try createPort(name: name, friendlyName: friendlyName, type: type, isRestore: isRestore)
        do {
            for p in properties { try addProperty(p, to: id, isRestore: isRestore) }
            try createNIC(on: id, nic, isRestore: isRestore)
        } catch {
            if let r = records[id] {
                r.removing = true
                r.removalIsRestore = isRestore
                _ = advanceRemoval(r)
            }
            throw error
        }
        return id
    }

    // MARK: - References

    /// ReferenceSwitchNic: allowed only while the NIC is connected. NIC_DELETE waits for the matching
    /// ``dereferenceNIC(on:holder:)``. `holder` names who holds it (shown when a removal waits on
    /// it); taken inside an extension's control callback, it defaults to that extension.
    public func referenceNIC(on port: PortID, holder: String? = nil) throws(SwitchError) {
        let r = try record(port, for: "NIC reference")
        guard r.nic?.state == .connected else {
            throw SwitchError(.invalidState, "NIC reference refused for port \(describe(r)): NIC is \(r.nic?.state.rawValue ?? "absent"), not connected")
        }
        r.nicReferences += 1
        r.nicHolders[holder ?? callbackExtension ?? "unnamed", default: 0] += 1
    }

    public func dereferenceNIC(on port: PortID, holder: String? = nil) throws(SwitchError) {
        let r = try record(port, for: "NIC dereference")
        guard r.nicReferences > 0 else { throw SwitchError(.invalidState, "NIC dereference for port \(describe(r)): no reference is held") }
        // Attribute the release to the named holder when it has one, else to any holder.
        let key = holder ?? callbackExtension ?? "unnamed"
        if let held = r.nicHolders[key], held > 0 {
            r.nicHolders[key] = held == 1 ? nil : held - 1
        } else if let any = r.nicHolders.first(where: { $0.value > 0 }) {
            r.nicHolders[any.key] = any.value == 1 ? nil : any.value - 1
        }
        releaseNICReference(r)
    }

    /// Who holds a port's NIC: extensions by name with their reference counts, and the number of
    /// pended frames (in-flight references). nil for an unknown port.
    public func nicHolders(of port: PortID) -> (extensions: [String: Int], pendedFrames: Int)? {
        guard let r = records[port] else { return nil }
        let named = r.nicHolders.values.reduce(0, +)
        return (r.nicHolders, max(0, r.nicReferences - named))
    }

    /// ReferenceSwitchPort: allowed while the port is not tearing down. PORT_DELETE waits for the
    /// matching ``dereferencePort(_:)``.
    public func referencePort(_ port: PortID) throws(SwitchError) {
        let r = try record(port, for: "port reference")
        guard r.params.state == .created else {
            throw SwitchError(.invalidState, "port reference refused for port \(describe(r)): port is \(r.params.state.rawValue)")
        }
        r.portReferences += 1
    }

    public func dereferencePort(_ port: PortID) throws(SwitchError) {
        let r = try record(port, for: "port dereference")
        guard r.portReferences > 0 else { throw SwitchError(.invalidState, "port dereference for port \(describe(r)): no reference is held") }
        r.portReferences -= 1
        if r.portReferences == 0 && r.portDeleteDeferred && (controlBusy || inBatch) { needsSettle = true }
        if r.portReferences == 0 && r.portDeleteDeferred && !controlBusy && !inBatch {
            r.portDeleteDeferred = false
            finishPortDelete(r, isRestore: r.removalIsRestore)
        }
    }

    // MARK: - Internals

    func record(_ port: PortID, for operation: String) throws(SwitchError) -> PortRecord {
        guard let r = records[port] else { throw SwitchError(.notFound, "\(operation) refused: no port \(port)") }
        return r
    }

    func describe(_ r: PortRecord) -> String { "\(r.params.id) (\(r.params.name))" }

    func checkNotBusy(_ operation: String) throws(SwitchError) {
        if inBatch {
            throw SwitchError(.invalidState, "\(operation) refused: issued from inside a batch callback (control steps run between batches)")
        }
        if controlBusy {
            throw SwitchError(.invalidState, "\(operation) refused: issued from inside an extension's control callback (re-entrant request)")
        }
    }

    func emit(_ kind: LifecycleEvent.Kind, _ r: PortRecord, nic: NICParameters? = nil, isRestore: Bool) {
        onEvent?(LifecycleEvent(kind: kind, port: r.params, nic: nic ?? r.nic, vetoedRequest: nil, vetoingExtension: nil,
                                vetoReason: nil, isRestore: isRestore))
    }

    func releaseNICReference(_ r: PortRecord) {
        r.nicReferences -= 1
        if r.nicReferences == 0 && r.nicDeleteDeferred && (controlBusy || inBatch) { needsSettle = true }
        if r.nicReferences == 0 && r.nicDeleteDeferred && !controlBusy && !inBatch {
            r.nicDeleteDeferred = false
            finishNICDelete(r, isRestore: r.removalIsRestore)
        }
    }

    func finishNICDelete(_ r: PortRecord, isRestore: Bool) {
        guard var nic = r.nic else { return }
        nic.state = .deleted
        passDown(OIDRequest(kind: .nicDelete, port: r.params, nic: nic, property: nil, isRestore: isRestore))
        r.nic = nil
        emit(.nicDelete, r, nic: nic, isRestore: isRestore)
        if r.removing { _ = advanceRemoval(r) }
    }

    func finishPortDelete(_ r: PortRecord, isRestore: Bool) {
        r.params.state = .deleted
        passDown(OIDRequest(kind: .portDelete, port: r.params, nic: nil, property: nil, isRestore: isRestore))
        macTable.flush(portSlot: r.slot)
        resetOffload(slot: r.slot)
        settleOffload()
        records[r.params.id] = nil
        slotRecords[Int(r.slot)] = nil
        slots[Int(r.slot)] = SlotInfo()
        macTable.setPinned(slot: r.slot, false)
        for w in 0..<64 { trunkBitmaps[Int(r.slot) * 64 + w] = 0 }
        freeSlots.append(r.slot)
        emit(.portDelete, r, isRestore: isRestore)
        let completion = r.removalCompletion
        r.removalCompletion = nil
        completion?()
    }

    /// Moves a port being removed one step at a time; stops where a reference holds it.
    func advanceRemoval(_ r: PortRecord) -> Bool {
        let isRestore = r.removalIsRestore
        if let nic = r.nic {
            if nic.state == .connected || nic.state == .created {
                try? disconnectNIC(on: r.params.id, isRestore: isRestore)
            }
            if r.nicDeleteDeferred { return false }
            // deleteNIC re-enters advanceRemoval through finishNICDelete when it completes.
            if (try? deleteNIC(on: r.params.id, isRestore: isRestore)) != true { return false }
            return records[r.params.id] == nil
        }
        if r.params.state == .created { try? teardownPort(r.params.id, isRestore: isRestore) }
        if r.params.state == .tearingDown && !r.portDeleteDeferred {
            return (try? deletePort(r.params.id, isRestore: isRestore)) == true
        }
        return r.params.state == .deleted
    }

    func removeConnected(_ slot: UInt16) {
        for k in 0..<connectedCount where connectedSlots[k] == slot {
            connectedSlots[k] = connectedSlots[connectedCount - 1]
            connectedCount -= 1
            return
        }
    }

    /// The name of the extension at `stackIndex` in the stack (a drop's reporter), nil for the switch
    /// itself (-1) or an index outside the stack.
    public func extensionName(atStackIndex stackIndex: Int) -> String? {
        stackIndex >= 0 && stackIndex < stack.count ? stack[stackIndex].name : nil
    }

    /// The name a drop's reporter index stands for: the extension at that stack position, or the
    /// core stage (``coreReporters``) for a negative index.
    public func dropReporterName(_ reporterIndex: Int) -> String {
        if reporterIndex >= 0 { return extensionName(atStackIndex: reporterIndex) ?? "unknown" }
        let stage = -reporterIndex - 1
        return stage < Self.coreReporters.count ? Self.coreReporters[stage] : "unknown"
    }

    func diagnose(_ stackIndex: Int, _ message: String) {
        let name = stackIndex >= 0 && stackIndex < stack.count ? stack[stackIndex].name : "switch"
        onDiagnostic?("\(name): \(message)")
    }
}
