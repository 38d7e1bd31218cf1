/// What the switch tells extensions about a port (NDIS_SWITCH_PORT_PARAMETERS).
public struct PortParameters: Sendable, Equatable {
    public var id: PortID
    /// Unique internal name (for a VM NIC: the TAP name).
    public var name: String
    public var friendlyName: String
    public var type: PortType
    public var state: PortState

    public init(id: PortID = .switchItself, name: String, friendlyName: String = "", type: PortType, state: PortState = .created) {
        self.id = id
        self.name = name
        self.friendlyName = friendlyName
        self.type = type
        self.state = state
    }
}

/// What the switch tells extensions about a NIC (NDIS_SWITCH_NIC_PARAMETERS).
public struct NICParameters: Sendable, Equatable {
    public var port: PortID
    public var index: NICIndex
    public var type: PortType
    public var vmName: String
    public var mtu: UInt32
    /// The MAC assigned by the host (the TAP's configured address).
    public var permanentMAC: MACAddress
    /// The MAC in use (equal to the permanent one unless the guest changed it).
    public var currentMAC: MACAddress
    public var state: NICState

    public init(port: PortID = .switchItself, index: NICIndex = 0, type: PortType, vmName: String = "", mtu: UInt32 = 1500,
                permanentMAC: MACAddress, currentMAC: MACAddress? = nil, state: NICState = .created) {
        self.port = port
        self.index = index
        self.type = type
        self.vmName = vmName
        self.mtu = mtu
        self.permanentMAC = permanentMAC
        self.currentMAC = currentMAC ?? permanentMAC
        self.state = state
    }
}


/// A port property: typed (VLAN, security) or custom (a key plus a versioned byte blob, Hyper-V's
/// GUID-identified custom properties).
public enum PortProperty: Sendable, Equatable {
    case vlan(VLANPolicy)
    case security(SecurityPolicy)
    case custom(key: String, version: UInt16, data: [UInt8])

    /// Identity used to match add/update/delete: one VLAN and one security property per port,
    /// custom properties by key.
    public var key: PropertyKey {
        switch self {
        case .vlan: .vlan
        case .security: .security
        case .custom(let key, _, _): .custom(key)
        }
    }
}

public enum PropertyKey: Hashable, Sendable, CustomStringConvertible {
    case vlan, security, custom(String)
    public var description: String {
        switch self {
        case .vlan: "vlan"
        case .security: "security"
        case .custom(let k): "custom:\(k)"
        }
    }
}

/// A lifecycle or policy request as it travels down the extension stack: Hyper-V's switch OID
/// requests (OID_SWITCH_PORT_CREATE ...). Not to be confused with the control protocol's
/// `ControlRequest`, which is what `tapswitchctl` asks the daemon.
public struct OIDRequest: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case portCreate = "PORT_CREATE", portUpdated = "PORT_UPDATED", portTeardown = "PORT_TEARDOWN", portDelete = "PORT_DELETE"
        case nicCreate = "NIC_CREATE", nicConnect = "NIC_CONNECT", nicUpdated = "NIC_UPDATED"
        case nicDisconnect = "NIC_DISCONNECT", nicDelete = "NIC_DELETE"
        case propertyAdd = "PORT_PROPERTY_ADD", propertyUpdate = "PORT_PROPERTY_UPDATE", propertyDelete = "PORT_PROPERTY_DELETE"

        /// Requests a filtering or forwarding extension may veto (never a capture extension).
        public var isVetoable: Bool {
            switch self {
            case .portCreate, .nicCreate, .propertyAdd, .propertyUpdate, .propertyDelete: true
            default: false
            }
        }
    }

    public let kind: Kind
    public let port: PortParameters
    public let nic: NICParameters?
    /// For property requests: the property (for delete, the one being removed).
    public let property: PortProperty?
    /// True when the daemon replays the lifecycle while re-adopting ports after a restart.
    public let isRestore: Bool
}

/// An extension's answer to a control request.
public enum ControlVerdict: Sendable, Equatable {
    case accept
    case veto(reason: String)
    /// Only the forwarding extension, only for `NIC_DISCONNECT`: hold the request until it has
    /// flushed the frames it still holds for the NIC, then call
    /// ``VirtualSwitch/completePendedDisconnect(on:)`` (Hyper-V: return PENDING, forward later).
    case pend
}

/// The outcome of a request, as the extensions above a veto (or all of them) see it.
public enum ControlOutcome: Sendable, Equatable {
    case completed
    case vetoed(by: String, reason: String)
}

/// A lifecycle event, as the daemon's event stream and tests see it.
public struct LifecycleEvent: Sendable, Equatable, CustomStringConvertible {
    public typealias Kind = EventKind
    public let kind: Kind
    public let port: PortParameters
    public let nic: NICParameters?
    /// For `veto`: the vetoed request, the extension and its reason.
    public let vetoedRequest: OIDRequest.Kind?
    public let vetoingExtension: String?
    public let vetoReason: String?
    public let isRestore: Bool

    public var description: String {
        var s = "\(kind.rawValue) port=\(port.id)(\(port.name))"
        if let nic { s += " nic=\(nic.index)" }
        if let v = vetoingExtension { s += " \(vetoedRequest?.rawValue ?? "") by \(v): \(vetoReason ?? "")" }
        return s
    }
}
