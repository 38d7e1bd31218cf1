import SwitchCore

/// A VM NIC to plug in: one TAP, one port.
public struct VMNICSpec: Sendable, Equatable {
    public var vmName: String
    /// TAP name (also the port name).
    public var tap: String
    /// The VM's MAC (what QEMU/libvirt give the guest NIC). Also set on the TAP.
    public var mac: MACAddress
    /// Owner/group of the TAP, so an unprivileged QEMU can attach. Neither: root only.
    public var owner: UInt32?
    public var group: UInt32?
    public var mtu: UInt32
    /// `.synthetic` (virtio offloads) or `.emulated`.
    public var type: PortType
    /// Access VLAN, if any.
    public var vlan: VLANID?
    /// Further port properties (policy settings) added before NIC_CREATE.
    public var properties: [PortProperty]
    /// The alias a newly created TAP carries from its first moment (how a restarted daemon
    /// recognises its own TAPs); nil for none. An adopted TAP keeps the one it has.
    public var marker: String?
    /// Extensions' saved per-NIC state from the previous run, handed back (NIC restore) after
    /// NIC_CREATE and before NIC_CONNECT when the port is re-adopted.
    public var savedStates: [SavedNICState] = []

    public init(vmName: String, tap: String, mac: MACAddress, owner: UInt32? = nil, group: UInt32? = nil, mtu: UInt32 = 1500,
                type: PortType = .synthetic, vlan: VLANID? = nil, properties: [PortProperty] = [], marker: String? = nil) {
        self.vmName = vmName
        self.tap = tap
        self.mac = mac
        self.owner = owner
        self.group = group
        self.mtu = mtu
        self.type = type
        self.vlan = vlan
        self.properties = properties
        self.marker = marker
    }
}

/// What kind of device backs a port.
public enum PortBacking: Sendable, Equatable {
    /// A persistent TAP that QEMU attaches to; the daemon reads its kernel side with AF_PACKET.
    case vmTAP
    /// A TAP whose fd tapswitch holds; its kernel side is a host interface (optionally in a netns).
    case internalTAP(netns: String?)
    /// An existing netdev used as the uplink.
    case external
}

/// One port as the runtime sees it: the core's view (parameters, NIC, counters, properties, all
/// shared SwitchCore/SwitchTypes values) plus the device-only facts the core does not know. The
/// daemon turns it into the wire's `PortInfo`; nothing here duplicates a wire type.
public struct PortStatus: Sendable {
    public let port: PortParameters
    public let nic: NICParameters?
    /// Switch counters plus the device's own drops (a full receive ring).
    public let counters: PortCounters
    public let properties: [PortProperty]
    /// The device behind the port and its kind; nil while the port has no device (it is being
    /// removed, or its device went away).
    public let device: String?
    public let backing: PortBacking?
    /// Which path the port's frames take: "fast path (xdp)" or "slow path: why".
    public var offload: String? = nil
}

/// The whole runtime at one instant, taken on the packet loop's queue.
public struct RuntimeSnapshot: Sendable {
    public let name: String
    public let ports: [PortStatus]
    public let macEntries: Int
    public let injectedFrames: UInt64
    public let switchDrops: [PortCounters.DropKey: UInt64]
    /// The packet loop's own counters (see ``LoopStatistics``).
    public let loop: LoopStatistics
}

/// Counters of the packet loop and the switch as a whole, read at snapshot time.
public struct LoopStatistics: Sendable, Equatable {
    /// Batches run through the extension stack.
    public var batches: UInt64 = 0
    /// Time the loop spent busy-polling, in nanoseconds.
    public var busyPollNanoseconds: UInt64 = 0
    /// MAC addresses that moved to another port.
    public var macMoves: UInt64 = 0
    /// Floods that found no other port (not drops).
    public var floodsWithoutPort: UInt64 = 0
    public init() {}
}
