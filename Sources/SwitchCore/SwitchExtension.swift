/// An in-process switch extension (a Hyper-V capture, filtering or forwarding extension).
///
/// All callbacks run on the queue that owns the ``VirtualSwitch``. Control requests travel down the
/// stack (top to bottom); ingress batches travel down, egress batches travel up. Every method has a
/// default implementation, so an extension implements only what it needs.
///
/// Extensions are class-bound so that calling one is a single witness-table dispatch, and they are
/// called once per batch, not per frame.
public protocol SwitchExtension: AnyObject {
    /// Unique name, shown in `tapswitchctl extensions` and in veto and drop reports.
    var name: String { get }
    var extensionClass: ExtensionClass { get }

    /// Called when the extension is enabled on a switch. A switch that is already running is not
    /// replayed: enumerate ``VirtualSwitch/ports``, ``VirtualSwitch/nic(of:)`` and
    /// ``VirtualSwitch/properties(of:)`` here, then live requests follow.
    func attached(to sw: VirtualSwitch)
    /// Called when the extension is disabled.
    func detached(from sw: VirtualSwitch)

    /// A lifecycle or property request on its way down. Return `.veto` to refuse a vetoable one
    /// (only filtering and forwarding extensions can veto; a capture extension's veto is ignored).
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

    /// Counters an operator reads (`tapswitchctl extensions`), as name/value pairs in a stable
    /// order. Read on the switch's queue, between batches.
    var counters: [ExtensionCounter] { get }

    /// Whether the fast path may forward `port`'s frames without this extension seeing them (see
    /// Offload.swift). Default: it must see every frame. Asked again whenever the port's properties,
    /// the stack or ``VirtualSwitch/offloadChanged(port:)`` says the answer may have changed.
    func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission
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

    /// Writable bytes of frame `i` (filtering and forwarding only; nil for capture).
    public func mutableBytes(_ i: Int) -> UnsafeMutableRawBufferPointer? {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to modify a frame; refused")
            return nil
        }
        return UnsafeMutableRawBufferPointer(start: batch.frame(i), count: batch.length(i))
    }

    /// Injects a new frame below this extension. Source defaults to port 0 (the switch: trusted,
    /// bypasses port policy); a real port's identity makes its policies apply. Returns the frame's
    /// index, or nil if refused (batch full, malformed frame, or a source port not accepting traffic).
    @discardableResult
    public func inject(_ bytes: UnsafeRawBufferPointer, source: PortID = .switchItself,
                       vnetHeader: VirtioNetHeader? = nil) -> Int? {
        sw.inject(into: batch, bytes: bytes, vnetHeader: vnetHeader, source: source, level: level + 1, reporter: stackIndex)
    }

    /// Clones frame `i` (filtering and forwarding only); the clone keeps the source, has no
    /// destinations, and travels down from below this extension.
    @discardableResult
    public func clone(_ i: Int) -> Int? {
        guard extensionClass != .capture else {
            sw.diagnose(stackIndex, "capture extension tried to clone a frame; refused")
            return nil
        }
        guard isLive(i) else { return nil }
        return sw.inject(into: batch, bytes: UnsafeRawBufferPointer(batch.bytes(i)), vnetHeader: batch.virtioHeader(i),
                         source: batch.source(i), level: level + 1, reporter: stackIndex, sourceNIC: batch.sourceNICIndex(i))
    }

    /// Takes frame `i` out of the batch (filtering only), for queueing or shaping. The pended frame
    /// holds a reference on its source NIC, so `NIC_DELETE` waits until the extension calls
    /// ``VirtualSwitch/resume(_:)`` or ``VirtualSwitch/complete(_:)``. This copies the frame: it is a
    /// slow path, not for every frame.
    public func pend(_ i: Int) -> PendedFrame? {
        guard extensionClass == .filtering, isLive(i) else {
            sw.diagnose(stackIndex, "only filtering extensions can pend frames; refused")
            return nil
        }
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

/// A frame an extension took out of the data path. Holds a reference on its source NIC.
public final class PendedFrame {
    public let bytes: [UInt8]
    public let vnetHeader: VirtioNetHeader?
    public let source: PortID
    public let sourceNIC: NICIndex
    let level: Int16
    var finished = false

    init(bytes: [UInt8], vnetHeader: VirtioNetHeader?, source: PortID, sourceNIC: NICIndex, level: Int16) {
        self.bytes = bytes
        self.vnetHeader = vnetHeader
        self.source = source
        self.sourceNIC = sourceNIC
        self.level = level
    }
}
