import SwitchCore

/// What a policy extension knows about one port: its identity and type, its NIC (for the NIC's
/// MACs) and its security property.
public struct TrackedPort: Sendable, Equatable {
    public var id: PortID
    public var type: PortType
    public var nic: NICParameters?
    public var security: SecurityPolicy
    /// The port ACL (custom property ``PortProperty/aclKey``).
    public var acl = PortACL()
    /// Storm control and policing (custom property ``PortProperty/trafficLimitsKey``).
    public var limits = TrafficLimits()

    /// A VM's port (synthetic or emulated NIC): where the guards' per-VM defaults apply.
    public var isVM: Bool { type == .synthetic || type == .emulated }

    /// Takes a property's value if it is one the policies read; returns whether it was.
    @discardableResult
    mutating func take(_ p: PortProperty) -> Bool {
        switch p {
        case .security(let s): security = s
        case .vlan: return false
        case .custom(let key, _, _):
            if key == PortProperty.aclKey { acl = p.portACL ?? PortACL() }
            else if key == PortProperty.trafficLimitsKey { limits = p.trafficLimits ?? TrafficLimits() }
            else { return false }
        }
        return true
    }

    /// Resets a deleted property the policies read; returns whether it was one.
    mutating func clear(_ key: PropertyKey) -> Bool {
        switch key {
        case .security: security = SecurityPolicy()
        case .custom(PortProperty.aclKey): acl = PortACL()
        case .custom(PortProperty.trafficLimitsKey): limits = TrafficLimits()
        default: return false
        }
        return true
    }
}

/// Base of the shipped policy extensions: follows ports, NICs and the security property as control
/// requests complete (or, when enabled on a running switch, by enumerating them), and tells the
/// subclass which port changed so it can rebuild that port's entry of its flat per-frame tables.
///
/// Settings take effect only when a request *completes* (not when it passes by): a request an
/// extension lower in the stack vetoes leaves the old value in force, as in Hyper-V.
///
/// Subclasses keep their per-frame state in flat tables indexed by the port's dense index
/// (``VirtualSwitch/portIndex(of:)``), allocated in ``prepare(_:capacity:)``, so the data path
/// reads them without hashing, locking or reference counting.
///
/// ## Concurrency model
/// Confined to the queue that owns the switch it is enabled on, like every extension: control
/// callbacks and batches are serialised by that owner. Not `Sendable`.
public class PortPolicyExtension: SwitchExtension {
    public let name: String
    public let extensionClass: ExtensionClass
    /// Tracked ports by dense index (control path only).
    public private(set) var ports: [TrackedPort?] = []

    init(name: String, extensionClass: ExtensionClass) {
        self.name = name
        self.extensionClass = extensionClass
    }

    // MARK: - Subclass hooks

    /// Called once when enabled: allocate per-port tables for `capacity` ports, register drop reasons.
    func prepare(_ sw: VirtualSwitch, capacity: Int) {}
    /// The port at `index` changed (nil: it is gone; reset the index's entry).
    func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {}
    /// Vetoes a security property this extension cannot enforce (nil: accept).
    func check(_ policy: SecurityPolicy, for port: PortParameters, in sw: VirtualSwitch) -> String? { nil }

    // MARK: - SwitchExtension

    public func attached(to sw: VirtualSwitch) {
        ports = Array(repeating: nil, count: sw.configuration.maxPorts)
        prepare(sw, capacity: sw.configuration.maxPorts)
        // Enabled on a running switch: no replay, so enumerate.
        for p in sw.ports {
            guard let index = sw.portIndex(of: p.id) else { continue }
            var port = TrackedPort(id: p.id, type: p.type, nic: sw.nic(of: p.id), security: SecurityPolicy())
            for prop in sw.properties(of: p.id) { port.take(prop) }
            ports[index] = port
            portChanged(index, port, sw)
        }
    }

    public func detached(from sw: VirtualSwitch) {
        for index in ports.indices where ports[index] != nil {
            ports[index] = nil
            portChanged(index, nil, sw)
        }
    }

    public func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        switch request.kind {
        case .propertyAdd, .propertyUpdate:
            if case .security(let s)? = request.property, let reason = check(s, for: request.port, in: sw) {
                return .veto(reason: reason)
            }
            return .accept
        default:
            return .accept
        }
    }

    public func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch) {
        guard outcome == .completed, let index = sw.portIndex(of: request.port.id), index < ports.count else { return }
        if request.kind == .portDelete {
            ports[index] = nil
            portChanged(index, nil, sw)
            return
        }
        var port = ports[index] ?? TrackedPort(id: request.port.id, type: request.port.type, nic: nil, security: SecurityPolicy())
        switch request.kind {
        case .nicCreate, .nicConnect, .nicUpdated, .nicDisconnect:
            port.nic = request.nic
        case .nicDelete:
            port.nic = nil
        case .propertyAdd, .propertyUpdate:
            guard let prop = request.property, port.take(prop) || ports[index] == nil else { return }
        case .propertyDelete:
            guard let prop = request.property, port.clear(prop.key) || ports[index] == nil else { return }
        case .portCreate, .portUpdated, .portTeardown, .portDelete:
            if ports[index] != nil { return }
        }
        ports[index] = port
        portChanged(index, port, sw)
    }

    public func ingress(_ context: inout IngressContext) {}
    public func egress(_ context: inout EgressContext) {}
    /// NIC save/restore: nothing by default (settings travel as port properties, not here).
    public func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState? { nil }
    public func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool { false }
    public var counters: [ExtensionCounter] { [] }
    /// A policy that depends only on the port, its NIC and the frame's source MAC is repeated
    /// exactly by the fast path's entries (they exist only for frames the policy let through, keyed
    /// by ingress port and source MAC); guards that read L3/L4 fields override this.
    public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission { .allowed }
    /// Guards whose checks the fast path repeats (``OffloadChecks``) override this.
    public func offloadChecks(for port: PortID, switch sw: VirtualSwitch) -> OffloadChecks { [] }
}
