/// Port and NIC types (Hyper-V's NDIS_SWITCH_PORT_TYPE / NIC_TYPE). On Linux: a VM's TAP is
/// `synthetic` (virtio offloads) or `emulated`, a host-side TAP is `internal`, an uplink `external`.
/// The raw values are the wire names.
public enum PortType: String, Sendable, CaseIterable {
    /// The uplink: an existing host device.
    case external
    /// A host-side interface on the switch.
    case `internal`
    /// A VM's paravirtual NIC (virtio-net), Hyper-V's "synthetic" adapter.
    case synthetic
    /// A VM's emulated NIC (e1000, rtl8139), Hyper-V's "legacy" adapter.
    case emulated

    /// The types a VM NIC can have.
    public static let vmNICTypes: [PortType] = [.synthetic, .emulated]
    public var isVMNIC: Bool {
        switch self {
        case .synthetic, .emulated: true
        case .external, .internal: false
        }
    }
}

/// Port states, following the PORT_CREATE … PORT_TEARDOWN … PORT_DELETE lifecycle.
public enum PortState: String, Sendable, CaseIterable {
    case created
    /// PORT_TEARDOWN was issued; PORT_DELETE follows once references drain.
    case tearingDown = "teardown"
    case deleted
}

/// NIC states, following NIC_CREATE, NIC_CONNECT, NIC_DISCONNECT and NIC_DELETE.
public enum NICState: String, Sendable, CaseIterable {
    case created, connected, disconnected, deleted
}

/// Port-level VLAN policy (the standard VLAN port property). A port without one takes its port
/// type's default (``defaultPolicy(for:)``): never "any tag goes".
public enum VLANPolicy: Sendable, Equatable {
    /// Untagged on the wire, VLAN `id` inside the switch.
    case access(VLANID)
    /// Tagged for the allowed VLANs. Untagged frames belong to `native` and leave untagged:
    /// a VLAN id, 0 for the switch's untagged domain (where untagged ports are), nil to drop them.
    case trunk(allowed: Set<VLANID>, native: VLANID?)
    /// Untagged frames only (tagged frames are dropped): the port is in the untagged domain.
    case untagged

    /// The default of a port with no VLAN property: VM and internal ports carry untagged frames
    /// only, the external port is ``externalDefault``.
    public static func defaultPolicy(for type: PortType) -> VLANPolicy {
        type == .external ? externalDefault : .untagged
    }

    /// Every VLAN tagged, untagged frames in the untagged domain.
    public static let externalDefault = VLANPolicy.trunk(allowed: Set(1...4094), native: 0)
}

/// The three extension classes, in stack order from the top (Hyper-V's capture, filter, forward).
public enum ExtensionClass: String, Sendable, Comparable, CaseIterable {
    /// Read-only: inspects frames and control requests, may inject on ingress; never drops or vetoes.
    case capture
    /// May drop on ingress, exclude destinations on egress, modify, clone, inject, pend, and veto.
    case filtering
    /// At most one per switch: sets destinations on ingress (replacing the built-in learning switch).
    case forwarding

    var rank: Int { self == .capture ? 0 : self == .filtering ? 1 : 2 }
    public static func < (a: ExtensionClass, b: ExtensionClass) -> Bool { a.rank < b.rank }
}

/// One counter of an extension (Hyper-V's feature status, reduced to numbers).
public struct ExtensionCounter: Sendable, Equatable {
    public let name: String
    public let value: UInt64
    public init(_ name: String, _ value: UInt64) {
        self.name = name
        self.value = value
    }
}

/// An extension as the switch, the daemon and `tapswitchctl extensions` see it.
public struct ExtensionInfo: Sendable, Equatable {
    public var name: String
    public var extensionClass: ExtensionClass
    public var enabled: Bool
    /// Position within its class in stack order (0 = first on ingress); nil when disabled.
    public var position: Int?
    /// One line saying what it does (from the registry that offers it); nil when unknown.
    public var summary: String?
    /// The extension's counters, in its own stable order; empty when disabled.
    public var counters: [ExtensionCounter]

    public init(name: String, extensionClass: ExtensionClass, enabled: Bool = true, position: Int?, summary: String? = nil,
                counters: [ExtensionCounter] = []) {
        self.name = name
        self.extensionClass = extensionClass
        self.enabled = enabled
        self.position = position
        self.summary = summary
        self.counters = counters
    }
}

/// What the built-in forwarding does with unicast frames to an address it has not learned.
public enum UnknownUnicastPolicy: String, Sendable, CaseIterable {
    /// Flood to every connected NIC in the VLAN except the source (Linux bridge behaviour).
    case flood
    /// Send only to the uplink (external ports); drop when there is none or the uplink is the
    /// source (Hyper-V's default).
    case uplink
}

/// Lifecycle event kinds, spelled the same in the core, the event stream and every output.
public enum EventKind: String, Sendable, CaseIterable {
    case portCreate = "port-create"
    case nicCreate = "nic-create"
    case nicConnect = "nic-connect"
    case nicDisconnect = "nic-disconnect"
    case nicDelete = "nic-delete"
    case portTeardown = "port-teardown"
    case portDelete = "port-delete"
    case nicUpdated = "nic-updated"
    case portUpdated = "port-updated"
    /// A port's settings changed (PORT_PROPERTY_ADD/UPDATE/DELETE completed).
    case portProperty = "port-property"
    case veto
    /// Not a lifecycle step: a removal still waits for references after the configured time
    /// (the daemon reports it; `detail` names the holders).
    case nicHeld = "nic-held"
    /// Not a lifecycle step: a port mirror was added or deleted (`portName` is its destination,
    /// `detail` describes the mirror).
    case mirrorAdd = "mirror-add"
    case mirrorDel = "mirror-del"
}
