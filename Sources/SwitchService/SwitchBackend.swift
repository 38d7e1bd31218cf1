import ControlProtocol
import PacketCapture
import ServiceSupport
import StateStore

/// The seam between the daemon (config, control socket, state, systemd) and the switch itself.
///
/// The daemon drives exactly one backend: ``DataPlaneBackend`` (SwitchCore + DataPlane) on the
/// host's devices, or, in the device-free test daemon, on in-memory ones (`FakeDevices`).
///
/// ## Contract
/// - `init` of a backend must not touch any device: `tapswitchd --check-config` creates one only to
///   ask ``availableExtensions()``.
/// - Call order from the daemon: ``configure(_:extensions:)`` once, ``subscribeEvents()``,
///   ``adopt(_:)`` once (state from the previous run), then ``startHeartbeat(_:)``, then any mix
///   of the operations, ``reload(_:extensions:)`` on SIGHUP, and ``shutdown()`` last.
/// - The daemon serialises mutating calls (one VM/port operation at a time); queries
///   (``snapshot()``, ``fdb()``, ``extensions()``) may run concurrently with them.
/// - Every lifecycle step emits a ``SwitchEvent`` to all subscribers, in order, with a strictly
///   increasing `seq` (``EventHub`` does the bookkeeping).
/// - Errors are ``SwitchError``s; their `message` is shown to the operator as is.
/// - ``shutdown()`` stops the packet loop but leaves TAPs, ports and VMs in place: a daemon restart
///   must not disturb running VMs. Only ``stopVM(named:force:)`` and ``removePort(named:)`` delete devices.
public protocol SwitchBackend: Sendable {
    /// A short name for `tapswitchctl version` (e.g. `in-memory`, `dataplane`).
    var kind: String { get }

    /// The extensions this build offers, in their default stack order. Must not touch devices.
    func availableExtensions() -> [ExtensionDescriptor]

    /// Creates the switch with its settings and the enabled extensions (names, in stack order
    /// within each class). Called once, before ``adopt(_:)``.
    func configure(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError)

    /// ``configure(_:extensions:)`` that leaves the XDP fast path (`offload = "xdp"`) for
    /// ``startOffload()``: a starting daemon adopts its ports and forwards on the slow path first,
    /// instead of waiting for the program to be loaded and verified (tens of ms).
    func configure(_ settings: SwitchSettings, extensions: [String], offloadLater: Bool) async throws(SwitchError)

    /// Loads the fast path left for later by ``configure(_:extensions:offloadLater:)`` (and attaches
    /// it to the ports already open). Returns the line to log, nil when nothing was left.
    func startOffload() async -> String?

    /// Applies changed settings and extension list to the running switch without disturbing ports.
    func reload(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError)

    /// Takes over the ports recorded by the previous daemon run (their TAPs still exist and QEMU may
    /// be attached). Emits the lifecycle events again with `restore: true`. A record that cannot be
    /// adopted (its TAP vanished, a veto) is reported in the outcome, not thrown.
    func adopt(_ records: StateRecords) async -> AdoptionOutcome

    /// VM start: for each NIC, PORT_CREATE then NIC_CREATE (creating the persistent TAP owned by
    /// `owner`/`group`). NIC_CONNECT follows by itself when QEMU attaches. A veto or failure rolls
    /// back everything this call created and throws. Returns the ports created, in NIC order, with
    /// the MACs actually assigned.
    func startVM(_ spec: VMSpec) async throws(SwitchError) -> [PortInfo]

    /// VM stop: for each NIC, NIC_DISCONNECT (if connected), drain, NIC_DELETE, PORT_TEARDOWN,
    /// PORT_DELETE, then the TAP is removed. Returns once NIC_DISCONNECT has gone down the stack
    /// for every NIC: the TAPs it returns are still held by references, and the rest of their
    /// sequence completes by itself (published as events; a hold longer than
    /// ``setNICHoldReport(seconds:)`` is reported, naming the holders).
    ///
    /// Refused with ``SwitchError/Code/busy`` (naming the TAP, changing nothing) while a guest is
    /// attached to one of the VM's TAPs, unless `force`.
    func stopVM(named name: String, force: Bool) async throws(SwitchError) -> [String]

    func addInternalPort(_ spec: InternalPortSpec) async throws(SwitchError) -> PortInfo
    func addExternalPort(_ spec: ExternalPortSpec) async throws(SwitchError) -> PortInfo
    /// Removes an internal or external port by name (VM ports go with ``stopVM(named:force:)``). Like
    /// ``stopVM(named:force:)``, answers once NIC_DISCONNECT is done; true when the rest is pending.
    func removePort(named name: String) async throws(SwitchError) -> Bool

    /// Creates the segment's VXLAN device and attaches it as an external port carrying its VLAN
    /// untagged. Refused (nothing created) when the name, VLAN or VNI is taken, the underlay is
    /// missing or its MTU cannot carry the segment's MTU plus the VXLAN overhead.
    func addSegment(_ spec: SegmentSpec) async throws(SwitchError) -> PortInfo
    /// Removes the segment's port (like ``removePort(named:)``) and deletes its VXLAN device once the
    /// port is gone; true when that waits for references.
    func removeSegment(named name: String) async throws(SwitchError) -> Bool
    /// Every segment, by name.
    func segments() async -> [SegmentSpec]

    /// Adds a port mirror (`mirror add`): refused, with nothing changed, when the name is taken or a
    /// port it names does not exist. Before it returns, the sources' flows are off the fast path.
    /// Emits a `mirror-add` event. A port removed later leaves the mirror inactive until a port of
    /// that name is back.
    func addMirror(_ spec: MirrorSpec) async throws(SwitchError) -> MirrorInfo
    /// Deletes a mirror (`mirror del`); emits a `mirror-del` event.
    func removeMirror(named name: String) async throws(SwitchError)
    /// Every mirror with its state and counters, in the order added.
    func mirrors() async -> [MirrorInfo]

    /// How long a removal may wait for references before it is reported (log and a `nic-held`
    /// event naming the holders; again after twice as long each time while it waits).
    func setNICHoldReport(seconds: Double) async

    /// Makes a port's policy settings `settings` (its VLAN and security properties), as vetoable
    /// PORT_PROPERTY_ADD/UPDATE/DELETE requests that take effect on the next frame. A veto leaves
    /// the old settings in force and throws ``SwitchError/Code/vetoed``. On success emits a
    /// `port-property` event and returns the port.
    func setPortSettings(named name: String, _ settings: PortSettings) async throws(SwitchError) -> PortInfo

    /// Enables an offered extension at `position` within its class (nil: the top, as in
    /// Hyper-V), built with the settings last given for it.
    func enableExtension(named name: String, position: Int?) async throws(SwitchError)
    /// Disables an extension; from the next frame on it sees nothing.
    func disableExtension(named name: String) async throws(SwitchError)
    /// Gives an extension its settings (`[extensions.NAME]`, `extension set`): unknown or invalid
    /// ones are refused naming the key. An enabled extension is rebuilt in place with them.
    func setExtensionSettings(named name: String, _ settings: [String: String]) async throws(SwitchError)

    /// A port's ACL with its rules' hit counters (`acl list`).
    func aclInfo(named name: String) async throws(SwitchError) -> PortACLInfo

    func snapshot() async -> SwitchSnapshot
    func fdb() async -> [FDBEntry]
    func extensions() async -> [ExtensionInfo]

    /// The events kept so far plus a stream of every later event. Nothing is lost or duplicated
    /// between the two. The stream ends when the subscription is cancelled or at shutdown.
    func subscribeEvents() async -> EventSubscription

    /// Continues event numbering at `next` (the previous run's), reserving numbers with `reserve`
    /// (see ``EventHub/continueNumbering(from:reserve:)``). Call before anything publishes events.
    func continueEventNumbering(from next: UInt64, reserve: @escaping @Sendable (UInt64) throws -> Void) async throws(SwitchError)

    /// Starts a live capture (`tapswitchctl capture`): the capture extension records the ports'
    /// frames into the session's ring until ``stopCapture(_:)``. Unknown ports are refused.
    func startCapture(_ request: CaptureRequest) async throws(SwitchError) -> CaptureSession
    /// Stops a capture; its counters are final afterwards and its ring holds the rest to read.
    func stopCapture(_ session: CaptureSession) async

    /// Starts calling `heartbeat.beat()` from the packet loop at least every `heartbeat.interval`,
    /// also when idle, so a stuck loop stops the systemd watchdog pings. `beat()` is cheap and
    /// lock-free; call it from the DataPlane's queue.
    func startHeartbeat(_ heartbeat: Heartbeat) async

    /// Called after the switch removed a port by itself because its device vanished or failed (a
    /// TAP deleted outside tapswitch): the backend has dropped it from its VM and port records;
    /// the daemon updates its state file.
    func setPortLostHandler(_ handler: @escaping @Sendable (LostPort) -> Void) async

    /// The identity that marks the TAPs this switch creates (``TapMarker``; the state directory's
    /// ``StateStore/switchID()``). Call once, before ``adopt(_:)``; without it TAPs carry no marker.
    func setMarkerIdentity(_ id: String) async

    /// The TAPs carrying this switch's marker, as the kernel shows them (with the identity set).
    func markedTAPs() async throws(SwitchError) -> [MarkedTAP]

    /// Deletes a TAP of this switch that is no port of it (left by an interrupted step).
    func deleteLeftoverTAP(named name: String) async throws(SwitchError)

    /// NIC save before the daemon stops for a restart: every port's extension state, by port
    /// name. ``adopt(_:)`` hands `StateRecords.nicStates` back (NIC restore) to the re-adopted ports.
    func saveNICStates() async -> [String: [ExtensionNICState]]

    /// NIC save of one port, on demand (`nic save`, before a live migration): one blob per extension
    /// that has state for its NIC. ``SwitchError/Code/notFound`` for an unknown port.
    func saveNICState(named name: String) async throws(SwitchError) -> [ExtensionNICState]

    /// NIC restore of one port from blobs saved here or on another host (`nic restore`, after a live
    /// migration). Returns the blobs no extension took (each also logged).
    func restoreNICState(_ states: [ExtensionNICState], named name: String) async throws(SwitchError) -> [ExtensionNICState]

    /// Stops the packet loop and ends event streams. Leaves TAPs and ports in place (also those
    /// whose removal was still pending).
    func shutdown() async
}

extension SwitchBackend {
    public func saveNICStates() async -> [String: [ExtensionNICState]] { [:] }
    public func saveNICState(named name: String) async throws(SwitchError) -> [ExtensionNICState] {
        throw SwitchError(.invalidState, "this backend (\(kind)) has no NIC save")
    }
    public func restoreNICState(_ states: [ExtensionNICState], named name: String) async throws(SwitchError) -> [ExtensionNICState] {
        throw SwitchError(.invalidState, "this backend (\(kind)) has no NIC restore")
    }

    public func configure(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError) {
        try await configure(settings, extensions: extensions, offloadLater: false)
    }
}

/// An extension the backend can load.
public struct ExtensionDescriptor: Sendable, Equatable {
    public var name: String
    public var `class`: ExtensionClass
    public var summary: String

    public init(name: String, class: ExtensionClass, summary: String) {
        self.name = name
        self.class = `class`
        self.summary = summary
    }
}

/// A subscription to lifecycle events: the retained history, then everything after it.
///
/// Call ``cancel()`` when done: it ends `live` and releases the subscriber slot (merely dropping
/// the stream would keep it registered until the next event).
public struct EventSubscription: Sendable {
    public var history: [SwitchEvent]
    public var live: AsyncStream<SwitchEvent>
    private let onCancel: @Sendable () -> Void

    public init(history: [SwitchEvent], live: AsyncStream<SwitchEvent>, cancel: @escaping @Sendable () -> Void) {
        self.history = history
        self.live = live
        self.onCancel = cancel
    }

    public func cancel() { onCancel() }
}

/// What ``SwitchBackend/adopt(_:)`` took over, and what it could not.
public struct AdoptionOutcome: Sendable, Equatable {
    public var adopted: StateRecords
    /// One entry per record that was dropped: what (`vm web1`, `internal tsw-host0`) and why.
    public var failures: [Failure]

    public struct Failure: Sendable, Equatable {
        public var what: String
        public var reason: String
        public init(what: String, reason: String) {
            self.what = what
            self.reason = reason
        }
    }

    public init(adopted: StateRecords, failures: [Failure] = []) {
        self.adopted = adopted
        self.failures = failures
    }
}

/// A port the switch removed by itself (its device vanished or failed), and what it belonged to.
public struct LostPort: Sendable, Equatable {
    /// The port's name (the TAP, the internal port or the uplink device).
    public var name: String
    /// The VM whose NIC it was, nil for internal and external ports.
    public var vm: String?
    /// True when that was the VM's last NIC: the VM is no longer running.
    public var vmGone: Bool

    public init(name: String, vm: String?, vmGone: Bool) {
        self.name = name
        self.vm = vm
        self.vmGone = vmGone
    }
}
