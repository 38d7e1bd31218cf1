import Foundation

/// What the daemon reports about the switch: ports, NICs, counters, the MAC table, extensions
/// and lifecycle events. Plain Codable (the client decodes leniently, so newer daemons may add fields).
/// The field types are the shared vocabulary (``SwitchTypes``), which owns their JSON form
/// (`SwitchTypes/WireCoding.swift`): an unknown enum value is a decode error naming the field.

/// The NIC on a port (NIC index 0; a port carries at most one NIC here).
public struct NICInfo: Codable, Sendable, Equatable {
    public var index: NICIndex
    /// `synthetic` or `emulated`.
    public var type: PortType
    public var vmName: String
    public var mtu: Int
    /// The MAC the host assigned (from the spec, or generated).
    public var assignedMAC: MACAddress
    /// The MAC the guest actually uses, as learned from its traffic; nil until seen.
    public var currentMAC: MACAddress?
    public var state: NICState
    public var owner: String?
    public var group: String?

    public init(index: NICIndex = 0, type: PortType, vmName: String, mtu: Int, assignedMAC: MACAddress,
                currentMAC: MACAddress? = nil, state: NICState, owner: String? = nil, group: String? = nil) {
        self.index = index
        self.type = type
        self.vmName = vmName
        self.mtu = mtu
        self.assignedMAC = assignedMAC
        self.currentMAC = currentMAC
        self.state = state
        self.owner = owner
        self.group = group
    }
}

public struct PortInfo: Codable, Sendable, Equatable {
    /// Port id, > 0 (0 is the switch itself).
    public var id: PortID
    /// Unique name: the TAP for VM ports, the interface for internal ports, the device for external ports.
    public var name: String
    public var friendlyName: String
    public var type: PortType
    public var state: PortState
    /// The access VLAN, for an access port (kept beside `vlanPolicy` for older clients; follows it).
    public private(set) var vlan: Int?
    /// The port's whole VLAN policy (access, or trunk with its allowed VLANs and native VLAN); nil
    /// when the port has no VLAN property.
    public var vlanPolicy: VLANPolicy? {
        didSet { vlan = Self.accessVLAN(vlanPolicy) }
    }
    /// The MAC of an internal port (VM ports report theirs in `nic`).
    public var mac: MACAddress?
    public var netns: String?
    public var nic: NICInfo?
    public var counters: PortCounters
    /// The port's policy settings that differ from the defaults, as canonical `key=value` words
    /// (see ``PortSettings``); absent when none.
    public var settings: [String]?
    /// Which path the port's frames take: "fast path (xdp)" or "slow path: why".
    public var offload: String?

    public init(id: PortID, name: String, friendlyName: String, type: PortType, state: PortState, vlanPolicy: VLANPolicy? = nil,
                mac: MACAddress? = nil, netns: String? = nil, nic: NICInfo? = nil, counters: PortCounters = PortCounters(),
                settings: [String]? = nil) {
        self.id = id
        self.name = name
        self.friendlyName = friendlyName
        self.type = type
        self.state = state
        self.vlanPolicy = vlanPolicy
        self.vlan = Self.accessVLAN(vlanPolicy)
        self.mac = mac
        self.netns = netns
        self.nic = nic
        self.counters = counters
        self.settings = settings
    }
}

extension PortInfo {
    static func accessVLAN(_ policy: VLANPolicy?) -> Int? {
        if case .access(let id) = policy { Int(id) } else { nil }
    }
}

/// `[switch] offload`.
public enum OffloadMode: String, Codable, Sendable, CaseIterable {
    case xdp, off
}

/// `[switch] transmit`: whether the switch's sends skip the qdisc (and with it `tcpdump -i TAP`).
public enum TransmitPath: String, Codable, Sendable, CaseIterable {
    case bypass, qdisc
}

/// Switch-wide settings, as configured.
public struct SwitchSettings: Codable, Sendable, Equatable {
    public var name: String
    public var unknownUnicast: UnknownUnicastPolicy
    public var macAgingSeconds: Int
    public var macTableSize: Int
    public var macLimitPerPort: Int
    /// Longest busy-poll of the packet loop before it sleeps, in microseconds (0: never spin).
    public var busyPollMicroseconds: Int
    /// `xdp`: learned unicast flows between VM TAPs take the XDP fast path where the kernel allows;
    /// `off`: every frame takes the slow path.
    public var offload: OffloadMode = .xdp
    /// How frames go out to TAPs and the uplink: `.bypass` straight to the driver (fast,
    /// `ENOBUFS` backpressure, invisible to `tcpdump -i`), `.qdisc` through the qdisc (packet taps see them).
    public var transmit: TransmitPath = .bypass

    public init(name: String = "tapswitch0", unknownUnicast: UnknownUnicastPolicy = .flood, macAgingSeconds: Int = 300,
                macTableSize: Int = 8192, macLimitPerPort: Int = 1024, busyPollMicroseconds: Int = 50) {
        self.name = name
        self.unknownUnicast = unknownUnicast
        self.macAgingSeconds = macAgingSeconds
        self.macTableSize = macTableSize
        self.macLimitPerPort = macLimitPerPort
        self.busyPollMicroseconds = busyPollMicroseconds
    }
}

public struct SwitchSnapshot: Codable, Sendable, Equatable {
    public var settings: SwitchSettings
    /// Seconds since the switch started.
    public var uptimeSeconds: Double
    public var fdbEntries: Int
    public var ports: [PortInfo]
    /// The packet loop's and switch-wide counters; absent from older daemons.
    public var dataPlane: DataPlaneCounters?
    /// When the daemon started (Unix time, seconds): counters count from then.
    public var startTime: Double?
    /// Port mirrors with their counters; absent when there are none.
    public var mirrors: [MirrorInfo]?

    public init(settings: SwitchSettings, uptimeSeconds: Double, fdbEntries: Int, ports: [PortInfo],
                dataPlane: DataPlaneCounters? = nil, startTime: Double? = nil, mirrors: [MirrorInfo]? = nil) {
        self.settings = settings
        self.uptimeSeconds = uptimeSeconds
        self.fdbEntries = fdbEntries
        self.ports = ports
        self.dataPlane = dataPlane
        self.startTime = startTime
        self.mirrors = mirrors
    }
}

/// Switch-wide counters since the daemon started.
public struct DataPlaneCounters: Codable, Sendable, Equatable {
    /// Batches run through the extension stack.
    public var batches: UInt64
    /// Time the packet loop spent busy-polling, in seconds.
    public var busyPollSeconds: Double
    /// MAC addresses that moved to another port.
    public var macMoves: UInt64
    /// Floods that found no other port in their VLAN (not drops: nothing was lost).
    public var floodsWithoutPort: UInt64
    /// Frames extensions injected with the switch as source.
    public var injectedFrames: UInt64
    /// Drops of frames the switch itself sent (injected).
    public var switchDrops: PortCounters

    public init(batches: UInt64 = 0, busyPollSeconds: Double = 0, macMoves: UInt64 = 0, floodsWithoutPort: UInt64 = 0,
                injectedFrames: UInt64 = 0, switchDrops: PortCounters = PortCounters()) {
        self.batches = batches
        self.busyPollSeconds = busyPollSeconds
        self.macMoves = macMoves
        self.floodsWithoutPort = floodsWithoutPort
        self.injectedFrames = injectedFrames
        self.switchDrops = switchDrops
    }
}

public struct FDBEntry: Codable, Sendable, Equatable {
    public var mac: MACAddress
    /// nil for untagged.
    public var vlan: Int?
    public var portId: PortID
    public var portName: String
    /// Seconds since the entry was last refreshed; static entries report 0.
    public var ageSeconds: Int
    public var isStatic: Bool

    public init(mac: MACAddress, vlan: Int?, portId: PortID, portName: String, ageSeconds: Int, isStatic: Bool = false) {
        self.mac = mac
        self.vlan = vlan
        self.portId = portId
        self.portName = portName
        self.ageSeconds = ageSeconds
        self.isStatic = isStatic
    }
}

/// One lifecycle event.
public struct SwitchEvent: Codable, Sendable, Equatable {
    /// Strictly increasing per daemon run, starting at 1.
    public var seq: UInt64
    public var time: Date
    public var kind: EventKind
    public var portId: PortID
    public var portName: String
    public var nicIndex: NICIndex?
    public var vmName: String?
    /// Free text; for `veto`: `extension-name: reason`.
    public var detail: String?
    /// True when replayed while re-adopting ports after a daemon restart.
    public var restore: Bool

    public init(seq: UInt64, time: Date, kind: EventKind, portId: PortID, portName: String, nicIndex: NICIndex? = nil,
                vmName: String? = nil, detail: String? = nil, restore: Bool = false) {
        self.seq = seq
        self.time = time
        self.kind = kind
        self.portId = portId
        self.portName = portName
        self.nicIndex = nicIndex
        self.vmName = vmName
        self.detail = detail
        self.restore = restore
    }
}

public struct VersionInfo: Codable, Sendable, Equatable {
    public var daemon: String
    public var protocolVersion: Int
    public var backend: String
    public var pid: Int32

    public init(daemon: String, protocolVersion: Int, backend: String, pid: Int32) {
        self.daemon = daemon
        self.protocolVersion = protocolVersion
        self.backend = backend
        self.pid = pid
    }
}
