import SwitchCore

/// A VM NIC to plug in: one TAP, one port.
public struct VMNICSpec: Sendable, Equatable {
    public var vmName: String
    /// TAP name (also the port name).
    public var tap: String
    /// The VM's MAC (what QEMU/libvirt give the guest NIC). Also set on the TAP.
    public var mac: MACAddress
    /// Owner/group of the TAP, so an unprivileged QEMU can attach.
    public var owner: UInt32?
    public var group: UInt32?
    public var mtu: UInt32
    /// `.synthetic` (virtio offloads) or `.emulated`.
    public var type: PortType
    /// Access VLAN, if any.
    public var vlan: VLANID?

    public init(vmName: String, tap: String, mac: MACAddress, owner: UInt32? = nil, group: UInt32? = nil, mtu: UInt32 = 1500,
                type: PortType = .synthetic, vlan: VLANID? = nil) {
        self.vmName = vmName
        self.tap = tap
        self.mac = mac
        self.owner = owner
        self.group = group
        self.mtu = mtu
        self.type = type
        self.vlan = vlan
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

/// One port as `show` reports it.
public struct PortStatus: Sendable {
    public let port: PortParameters
    public let nic: NICParameters?
    public let counters: PortCounters
    public let properties: [PortProperty]
    public let device: String
    public let backing: PortBacking
}

/// The switch as `show` reports it.
public struct SwitchSnapshot: Sendable {
    public let name: String
    public let ports: [PortStatus]
    public let macEntries: Int
    public let injectedFrames: UInt64
    public let switchDrops: [PortCounters.DropKey: UInt64]
}
