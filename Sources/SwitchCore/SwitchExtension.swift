/// An in-process switch extension (a Hyper-V capture, filtering or forwarding extension).
///
/// All callbacks run on the queue that owns the ``VirtualSwitch``. Control requests travel down the
/// stack (top to bottom); ingress batches travel down, egress batches travel up. Every method has a
/// default implementation, so an extension implements only what it needs.
///
/// Extensions are class-bound so that calling one is a single witness-table dispatch, and they are
/// called once per batch, not per frame.
///
/// ## The contract
/// - **Rewrites are what forwarding sees.** A filtering or forwarding extension edits a frame on
///   ingress through ``IngressContext``: the setters (``IngressContext/setDestinationMAC(_:_:)``,
///   ``IngressContext/setVLAN(_:_:)``, ``IngressContext/pushVLANTag(_:tci:tpid:)``,
///   ``IngressContext/popVLANTag(_:)``) update the parsed headers at once; raw edits through
///   ``IngressContext/mutableBytes(_:)``, ``IngressContext/adjustHead(_:by:)`` or
///   ``IngressContext/adjustTail(_:by:)`` are re-parsed when the extension returns, before the next
///   extension and before forwarding. A rewrite that no longer parses is dropped, reported with the
///   extension's name. The frame's VLAN after a rewrite: an outer tag's VID if it has one; if the
///   rewrite removed the tag, the source port's untagged VLAN (access VLAN or trunk native VLAN,
///   else 0); otherwise unchanged. The source port's admission policy is not applied again: an
///   extension may move a frame into any VLAN. Egress sees frames read-only (Hyper-V: no data
///   modification on egress).
/// - **Frames grow and shrink in place**, within ``FrameBatch/headroom(_:)`` in front (at least
///   `FrameBatch.headroom - FrameBatch.reservedHeadroom` = 112 bytes on every received frame) and
///   ``FrameBatch/tailroom(_:)`` behind (at least 128 bytes): VLAN push/pop, encapsulation and
///   decapsulation copy nothing and allocate nothing.
/// - **Timers.** ``VirtualSwitch/scheduleTimer(for:after:every:tag:)`` asks for a one-shot deadline or a
///   periodic tick on the switch's monotonic clock; ``timerFired(_:switch:)`` runs between batches
///   even on an idle switch, so pended frames can be resumed (shaping, delay queues). The packet
///   loop sleeps no longer than the earliest deadline (about a millisecond of resolution).
/// - **Per-frame context.** ``IngressContext/setFrameContext(_:_:)`` stores one word per frame and
///   extension that the same extension reads back on egress (``EgressContext/frameContext(_:)``) and
///   after a pend/resume. It is not copied to clones or injected frames: expect it to be absent.
/// - **Copies (capture extensions).** A capture extension may keep copies of frames it saw (on
///   ingress, in ``delivered(_:)``) in a ``FrameBatch`` of its own and hand them to ports in
///   ``batchDelivered(_:)`` (``CopyContext/transmit(_:frames:to:)``): after every normal frame of
///   the batch, exactly as given (no VLAN conforming, no filtering, not shown to other extensions),
///   outside the port's counters, and only into the room the port has left (refused when its normal
///   frames of this batch already found its queue full). Port mirroring is built on this.
/// - **Clones.** ``IngressContext/clone(_:keepingDestinations:)`` copies a frame as it is now (bytes,
///   source, VLAN), without destinations unless asked; ``EgressContext/clone(_:)`` copies an
///   unmodified frame with its destinations (the only injection allowed on egress).
/// - **Pending.** Filtering and forwarding extensions may take a frame out of the batch
///   (``IngressContext/pend(_:)``) and put it back later (``VirtualSwitch/resume(_:)``) with the
///   destinations it had. The forwarding extension may answer `NIC_DISCONNECT` with
///   ``ControlVerdict/pend`` to flush frames it still holds for that NIC; it ends the wait with
///   ``VirtualSwitch/completePendedDisconnect(on:)``. Until then the NIC takes no ingress, may
///   still be a destination, and `NIC_DELETE` waits.
/// - **NIC save/restore.** ``saveNIC(port:nic:switch:)`` returns a versioned blob of per-NIC state;
///   the daemon keeps it in its state store, keyed by this extension's ``name`` and the port's
///   name, and hands it back with ``restoreNIC(_:port:nic:switch:)`` when it re-adopts the port
///   after a restart (after `NIC_CREATE`, before `NIC_CONNECT`), as Hyper-V does on live
///   migration. The port id may differ; match on the port's name.
public protocol SwitchExtension: AnyObject {
    /// Unique name, shown in `tapswitchctl extensions` and in veto and drop reports.
    var name: String { get }
    var extensionClass: ExtensionClass { get }

    /// Called when the extension is enabled on a switch. A switch that is already running is not
    /// replayed: enumerate ``VirtualSwitch/ports``, ``VirtualSwitch/nic(of:)`` and
    /// ``VirtualSwitch/properties(of:)`` here, then live requests follow.
    func attached(to sw: VirtualSwitch)
    /// Called when the extension is disabled. Its timers are already cancelled.
    func detached(from sw: VirtualSwitch)

    /// A lifecycle or property request on its way down. Return `.veto` to refuse a vetoable one
    /// (only filtering and forwarding extensions can veto; a capture extension's veto is ignored).
    /// The forwarding extension may return `.pend` for `NIC_DISCONNECT` (see the contract).
    func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict
    /// The outcome of a request this extension accepted: completed, or vetoed further down.
    func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch)

    /// Ingress: frames on their way down, with source stamped and no destinations yet (the
    /// forwarding extension adds them).
    func ingress(_ context: inout IngressContext)
    /// Egress: frames on their way up with their destinations; filters may exclude destinations.
    func egress(_ context: inout EgressContext)

    /// Capture extensions only: a frame was dropped, or one of its destinations excluded, anywhere
    /// on its way: at admission (malformed, VLAN not allowed, source not accepting, before any
    /// extension saw it), by an extension, by forwarding, or at delivery (transmit queue full).
    /// Called once per drop, at the moment of the drop, with the reason and the reporting extension.
    func dropped(_ context: DropContext)
    /// Capture extensions only: the frames just handed to one destination port, in exactly the
    /// bytes that port received (VLAN tag pushed or popped for it). Called once per destination
    /// port per batch, after the transmit; frames the port could not take are reported to
    /// ``dropped(_:)`` instead.
    func delivered(_ context: DeliveryContext)
    /// Capture extensions only: every frame of the batch was delivered or dropped. Copies the
    /// extension kept go out here (see the contract). Called once per batch.
    func batchDelivered(_ context: CopyContext)
    /// A timer this extension scheduled is due. Runs between batches; frames resumed here are
    /// processed right after the due timers have run.
    func timerFired(_ timer: ExtensionTimer, switch sw: VirtualSwitch)

    /// NIC save (Hyper-V OID_SWITCH_NIC_SAVE): this extension's run-time state for the port's NIC,
    /// or nil when it has none. Called when the daemon stops (for a restart) and when asked.
    func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState?
    /// NIC restore (OID_SWITCH_NIC_RESTORE): a blob this extension saved for a NIC of the same port
    /// name. Return false to refuse it (an unknown version, say): it is reported and dropped.
    func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool

    /// Counters an operator reads (`tapswitchctl extensions`), as name/value pairs in a stable
    /// order. Read on the switch's queue, between batches.
    var counters: [ExtensionCounter] { get }

    /// Whether the fast path may forward `port`'s frames without this extension seeing them (see
    /// Offload.swift). Default: it must see every frame. Asked again whenever the port's properties,
    /// the stack or ``VirtualSwitch/offloadChanged(port:)`` says the answer may have changed.
    func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission
    /// The checks the fast path must apply to frames from `port` for this extension to allow
    /// offload (see ``OffloadChecks``): a frame one of them matches takes the slow path, where the
    /// extension sees it. Default: none. Asked with ``offloadPermission(for:switch:)``.
    func offloadChecks(for port: PortID, switch sw: VirtualSwitch) -> OffloadChecks
}

extension SwitchExtension {
    public func attached(to sw: VirtualSwitch) {}
    public func detached(from sw: VirtualSwitch) {}
    public func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict { .accept }
    public func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch) {}
    public func ingress(_ context: inout IngressContext) {}
    public func egress(_ context: inout EgressContext) {}
    public func dropped(_ context: DropContext) {}
    public func delivered(_ context: DeliveryContext) {}
    public func batchDelivered(_ context: CopyContext) {}
    public func timerFired(_ timer: ExtensionTimer, switch sw: VirtualSwitch) {}
    public func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState? { nil }
    public func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool { false }
    public var counters: [ExtensionCounter] { [] }
}

/// One extension's view of an ingress batch. The operations it may use depend on its class; a
/// forbidden one (a capture extension dropping, say) is refused: it returns false and the switch
/// records a diagnostic.
public struct IngressContext {
    public unowned(unsafe) let batch: FrameBatch
    /// The switch, for queries, references and completing or resuming pended frames. Lifecycle
    /// requests from here are refused: they run between batches.
    public unowned(unsafe) let sw: VirtualSwitch
    @usableFromInline let level: Int16
    @usableFromInline let stackIndex: Int
    public let extensionClass: ExtensionClass
    /// Frames this call covers. Skip those for which ``isLive(_:)`` is false.
    public let frames: Range<Int>

    /// True if frame `i` is travelling and has reached this extension.
    @inlinable public func isLive(_ i: Int) -> Bool {
        batch.state[i] == .live && batch.entryLevel[i] <= level
    }

    /// Drops frame `i` (filtering and forwarding only), counting and reporting it at its source port.
    @discardableResult
    public func drop(_ i: Int, reason: DropReason) -> Bool {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to drop a frame; ignored")
            return false
        }
        guard isLive(i) else { return false }
        sw.dropFrame(batch, i, direction: .ingress, reason: reason, reporter: stackIndex)
        return true
    }

    /// Writable bytes of frame `i` (filtering and forwarding only; nil for capture). The frame is
    /// re-parsed when this extension returns, so forwarding sees what was written.
    public func mutableBytes(_ i: Int) -> UnsafeMutableRawBufferPointer? {
        guard mayModify(i, "modify") else { return nil }
        batch.markDirty(i)
        return UnsafeMutableRawBufferPointer(start: batch.frame(i), count: batch.length(i))
    }

    /// Rewrites frame `i`'s destination MAC; forwarding uses the new one.
    @discardableResult
    public func setDestinationMAC(_ i: Int, _ mac: MACAddress) -> Bool {
        guard mayModify(i, "modify") else { return false }
        batch.storeMAC(mac, at: 0, in: i)
        batch.headers[i].destination = mac
        return true
    }

    /// Moves frame `i` into VLAN `vid` (0: the untagged domain): forwarding and delivery use it. A
    /// tagged frame gets the new VID in its outer tag (priority bits kept).
    @discardableResult
    public func setVLAN(_ i: Int, _ vid: VLANID) -> Bool {
        guard vid <= 4094, mayModify(i, "modify") else { return false }
        let h = batch.headers[i]
        if h.isTagged {
            let tci = (h.vlanTCI & 0xF000) | vid
            batch.frame(i).storeBytes(of: tci.bigEndian, toByteOffset: 14, as: UInt16.self)
            batch.headers[i].vlanTCI = tci
        }
        batch.headers[i].vlan = vid
        return true
    }

    /// Pushes an outer 802.1Q (or, with `tpid` 0x88A8, 802.1ad) tag onto frame `i`, in the
    /// headroom: the frame is then in VLAN `tci & 0xFFF`. False when there is no room.
    @discardableResult
    public func pushVLANTag(_ i: Int, tci: UInt16, tpid: UInt16 = EtherType.vlan) -> Bool {
        guard mayModify(i, "grow"), batch.headroom(i) >= 4, batch.length(i) >= 12 else { return false }
        batch.insertVLANTag(i, tci: tci, tpid: tpid)
        sw.reparse(batch, i, reporter: stackIndex)
        return true
    }

    /// Pops frame `i`'s outer tag: it then belongs to its source port's untagged VLAN (see the
    /// contract). False when the frame is not tagged.
    @discardableResult
    public func popVLANTag(_ i: Int) -> Bool {
        guard mayModify(i, "shrink"), batch.headers[i].isTagged else { return false }
        batch.removeVLANTag(i)
        sw.reparse(batch, i, reporter: stackIndex)
        return true
    }

    /// Grows frame `i` at the front by `delta` bytes (encapsulation: write the new header into the
    /// returned bytes' first `delta` bytes) or, negative, strips `-delta` bytes (decapsulation).
    /// Returns the whole frame after the change, or nil when the room does not allow it. Re-parsed
    /// when this extension returns.
    public func adjustHead(_ i: Int, by delta: Int) -> UnsafeMutableRawBufferPointer? {
        guard mayModify(i, delta >= 0 ? "grow" : "shrink"), batch.moveHead(i, by: delta) else { return nil }
        batch.markDirty(i)
        return UnsafeMutableRawBufferPointer(start: batch.frame(i), count: batch.length(i))
    }

    /// Grows (positive) or trims (negative) frame `i` at its end, within ``FrameBatch/tailroom(_:)``.
    /// Returns the whole frame after the change, or nil. Re-parsed when this extension returns.
    public func adjustTail(_ i: Int, by delta: Int) -> UnsafeMutableRawBufferPointer? {
        guard mayModify(i, delta >= 0 ? "grow" : "shrink"), batch.moveTail(i, by: delta) else { return nil }
        batch.markDirty(i)
        return UnsafeMutableRawBufferPointer(start: batch.frame(i), count: batch.length(i))
    }

    @usableFromInline func mayModify(_ i: Int, _ what: String) -> Bool {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to \(what) a frame; refused")
            return false
        }
        return isLive(i)
    }

    /// This extension's context word for frame `i`, if it set one (on this frame, not a clone).
    @inlinable public func frameContext(_ i: Int) -> UInt64? { batch.context(i, stackIndex) }

    /// Stores a word with frame `i` that this extension reads back on egress (an index into its
    /// own table, flags, a timestamp). False when the extension sits below the first
    /// ``FrameBatch/contextSlots`` positions of the stack.
    @discardableResult
    public func setFrameContext(_ i: Int, _ value: UInt64) -> Bool {
        guard stackIndex < FrameBatch.contextSlots else {
            sw.diagnose(stackIndex, "per-frame context is limited to the first \(FrameBatch.contextSlots) extensions of the stack; refused")
            return false
        }
        batch.setContext(i, stackIndex, value)
        return true
    }

    /// Injects a new frame below this extension. Source defaults to port 0 (the switch: trusted,
    /// bypasses port policy); a real port's identity makes its policies apply. Returns the frame's
    /// index, or nil if refused (batch full, malformed frame, or a source port not accepting traffic).
    @discardableResult
    public func inject(_ bytes: UnsafeRawBufferPointer, source: PortID = .switchItself,
                       vnetHeader: VirtioNetHeader? = nil) -> Int? {
        sw.inject(into: batch, bytes: bytes, vnetHeader: vnetHeader, source: source, level: level + 1, reporter: stackIndex)
    }

    /// Clones frame `i` (filtering and forwarding only) as it is now: bytes, source and VLAN. The
    /// clone travels down from below this extension, with no per-frame context and, unless
    /// `keepingDestinations` (useful to the forwarding extension, after it added them), no
    /// destinations. Returns the clone's index, or nil (batch full).
    @discardableResult
    public func clone(_ i: Int, keepingDestinations: Bool = false) -> Int? {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to clone a frame; refused")
            return nil
        }
        guard batch.state[i] == .live && batch.entryLevel[i] <= level + 1 else { return nil }
        return sw.cloneFrame(batch, i, level: level + 1, keepingDestinations: keepingDestinations, reporter: stackIndex)
    }

    /// Takes frame `i` out of the batch (filtering and forwarding), for queueing or shaping. The
    /// pended frame holds a reference on its source NIC, so `NIC_DELETE` waits until the extension
    /// calls ``VirtualSwitch/resume(_:)`` or ``VirtualSwitch/complete(_:)``. It keeps its
    /// destinations (a forwarding extension pends after adding them) and the per-frame contexts.
    /// This copies the frame: it is a slow path, not for every frame.
    public func pend(_ i: Int) -> PendedFrame? {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extensions cannot pend frames; refused")
            return nil
        }
        guard batch.state[i] == .live && batch.entryLevel[i] <= level + (extensionClass == .forwarding ? 1 : 0) else { return nil }
        return sw.pend(batch, i, level: level)
    }

    /// Adds a destination to frame `i` (forwarding only). Refused when the NIC is not connected
    /// (no frame is addressed to a NIC before NIC_CONNECT or after NIC_DISCONNECT).
    @discardableResult
    public func addDestination(_ i: Int, port: PortID, nic: NICIndex = 0) -> Bool {
        guard extensionClass == .forwarding else {
            sw.diagnose(stackIndex, "only the forwarding extension can add destinations; refused")
            return false
        }
        // level + 1: frames the forwarding extension injected or cloned itself enter just below it.
        guard batch.state[i] == .live && batch.entryLevel[i] <= level + 1 else { return false }
        return sw.addDestination(batch, i, port: port, nic: nic, reporter: stackIndex)
    }
}

/// One extension's view of an egress batch: frames with their destinations.
public struct EgressContext {
    public unowned(unsafe) let batch: FrameBatch
    /// The switch, for queries, references and completing or resuming pended frames. Lifecycle
    /// requests from here are refused: they run between batches.
    public unowned(unsafe) let sw: VirtualSwitch
    @usableFromInline let stackIndex: Int
    public let extensionClass: ExtensionClass
    public let frames: Range<Int>

    @inlinable public func isLive(_ i: Int) -> Bool { batch.state[i] == .live }

    @inlinable public func destinations(_ i: Int) -> UnsafeBufferPointer<Destination> { batch.destinations(i) }

    /// Excludes destination `d` of frame `i` (filtering and forwarding only). One-way: an excluded
    /// destination stays excluded. Counted and reported at the destination port.
    @discardableResult
    public func exclude(_ i: Int, destination d: Int, reason: DropReason) -> Bool {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to exclude a destination; ignored")
            return false
        }
        guard isLive(i), d >= 0, d < Int(batch.destinationCount[i]) else { return false }
        let p = batch.destinations + i * batch.maxDestinations + d
        guard !p.pointee.isExcluded else { return true }
        p.pointee.isExcluded = true
        sw.countExclusion(batch, i, destination: p.pointee, reason: reason, reporter: stackIndex)
        return true
    }

    /// This extension's context word for frame `i`, as it set it on ingress (nil on clones).
    @inlinable public func frameContext(_ i: Int) -> UInt64? { batch.context(i, stackIndex) }

    /// Clones frame `i` with its destinations (exclusions included) and no context, for delivery
    /// with this batch (filtering and forwarding only). Extensions above this one see the clone on
    /// egress. Returns the clone's index, or nil (batch full).
    @discardableResult
    public func clone(_ i: Int) -> Int? {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to clone a frame; refused")
            return nil
        }
        guard isLive(i) else { return nil }
        return sw.cloneFrame(batch, i, level: Int16.max, keepingDestinations: true, reporter: stackIndex)
    }

    /// Attempts to clear an exclusion: always refused (exclusion is one-way), returns false.
    public func include(_ i: Int, destination d: Int) -> Bool {
        guard d >= 0, d < Int(batch.destinationCount[i]) else { return false }
        if batch.destinations[i * batch.maxDestinations + d].isExcluded {
            sw.diagnose(stackIndex, "destination exclusion is one-way; cannot re-include")
            return false
        }
        return true
    }
}

/// A capture extension's view of one drop (see ``SwitchExtension/dropped(_:)``). The frame's bytes
/// are valid only during the call.
public struct DropContext {
    public unowned(unsafe) let batch: FrameBatch
    public unowned(unsafe) let sw: VirtualSwitch
    /// The frame's index in `batch`.
    public let frame: Int
    /// The port the drop is counted at: the source for ingress drops, the destination for egress
    /// ones (an exclusion, a full transmit queue).
    public let port: PortID
    /// `port`'s dense index (see ``VirtualSwitch/portIndex(of:)``), -1 for the switch itself.
    public let portIndex: Int
    public let direction: Direction
    public let reason: DropReason
    /// Stack index of the extension that dropped it (``VirtualSwitch/extensionName(atStackIndex:)``),
    /// negative for a core stage; ``VirtualSwitch/dropReporterName(_:)`` names either.
    public let reporterIndex: Int

    @inlinable public var bytes: UnsafeRawBufferPointer { batch.bytes(frame) }
}

/// A capture extension's view of the frames delivered to one port (see
/// ``SwitchExtension/delivered(_:)``). Valid only during the call.
public struct DeliveryContext {
    public unowned(unsafe) let batch: FrameBatch
    public unowned(unsafe) let sw: VirtualSwitch
    public let port: PortID
    /// `port`'s dense index (see ``VirtualSwitch/portIndex(of:)``).
    public let portIndex: Int
    /// Indices into `batch` of the frames the port received, in order.
    public let frames: UnsafeBufferPointer<UInt16>
}

/// A capture extension's way to send the copies it keeps (see ``SwitchExtension/batchDelivered(_:)``).
/// Valid only during the call.
public struct CopyContext {
    public unowned(unsafe) let sw: VirtualSwitch
    @usableFromInline unowned(unsafe) let sink: any FrameSink

    /// Sends `frames` (indices into `copies`, a batch the extension owns) to `port`, as they are,
    /// after the batch's normal frames. Returns how many the port took; the others were not sent
    /// (the port is not connected, its queue is full, or a frame is too large for it) and are the
    /// extension's to count. Nothing is counted at the port.
    public func transmit(_ copies: FrameBatch, frames: UnsafeBufferPointer<UInt16>, to port: PortID) -> Int {
        sw.transmitCopies(copies, frames: frames, to: port, sink: sink)
    }
}

/// A frame an extension took out of the data path. Holds a reference on its source NIC.
public final class PendedFrame {
    public let bytes: [UInt8]
    public let vnetHeader: VirtioNetHeader?
    public let source: PortID
    public let sourceNIC: NICIndex
    /// The destinations it had when pended (the forwarding extension's); it is delivered to them.
    public let destinations: [Destination]
    let headers: ParsedHeaders
    let level: Int16
    let contextMask: UInt32
    let contexts: [UInt64]
    var finished = false

    init(bytes: [UInt8], vnetHeader: VirtioNetHeader?, source: PortID, sourceNIC: NICIndex, destinations: [Destination],
         headers: ParsedHeaders, level: Int16, contextMask: UInt32, contexts: [UInt64]) {
        self.bytes = bytes
        self.vnetHeader = vnetHeader
        self.source = source
        self.sourceNIC = sourceNIC
        self.destinations = destinations
        self.headers = headers
        self.level = level
        self.contextMask = contextMask
        self.contexts = contexts
    }
}

/// A timer an extension scheduled (``VirtualSwitch/scheduleTimer(for:after:every:tag:)``).
public struct ExtensionTimer: Hashable, Sendable {
    public let id: UInt64
    /// The extension's own tag, to tell its timers apart.
    public let tag: Int
}

/// An extension's saved per-NIC state (Hyper-V's NIC save blob): opaque bytes with the
/// extension's format version, keyed by extension name.
public struct SavedNICState: Sendable, Equatable {
    /// The extension that saved it (``SwitchExtension/name``).
    public var extensionName: String
    public var version: UInt16
    public var data: [UInt8]

    public init(extensionName: String, version: UInt16, data: [UInt8]) {
        self.extensionName = extensionName
        self.version = version
        self.data = data
    }
}
