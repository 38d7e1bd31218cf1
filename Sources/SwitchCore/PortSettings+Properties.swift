extension PortProperty {
    /// Custom property key of the port ACL (``PortACL``), whose data is its settings words as text.
    public static let aclKey = "tapswitch.acl"
    /// Custom property key of storm control and policing (``TrafficLimits``), same encoding.
    public static let trafficLimitsKey = "tapswitch.traffic-limits"
    static let textVersion: UInt16 = 0x0100

    /// The port ACL as its custom property (the enforcing extension decodes it with ``portACL``).
    public static func acl(_ acl: PortACL) -> PortProperty {
        var s = PortSettings()
        s.acl = acl
        return .custom(key: aclKey, version: textVersion, data: Array(s.assignments.joined(separator: "\n").utf8))
    }

    /// Storm control and policing as their custom property.
    public static func trafficLimits(_ limits: TrafficLimits) -> PortProperty {
        .custom(key: trafficLimitsKey, version: textVersion, data: Array(limits.assignments.joined(separator: "\n").utf8))
    }

    /// The settings a custom property of ours carries (nil: not ours, or not readable).
    func decodedSettings(_ key: String) -> PortSettings? {
        guard case .custom(let k, let version, let data) = self, k == key, version >> 8 == Self.textVersion >> 8 else { return nil }
        let words = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
        return try? PortSettings.parse(words)
    }

    /// The port ACL, when this is its custom property.
    public var portACL: PortACL? { decodedSettings(Self.aclKey)?.acl }
    /// The traffic limits, when this is their custom property.
    public var trafficLimits: TrafficLimits? { decodedSettings(Self.trafficLimitsKey)?.limits }
}

extension PortSettings {
    /// The settings a port's properties express (other custom properties are not settings).
    public init(properties: [PortProperty]) {
        self.init()
        for p in properties {
            switch p {
            case .vlan(let v): vlan = v
            case .security(let s): security = s
            case .custom:
                if let a = p.portACL { acl = a }
                if let l = p.trafficLimits { limits = l }
            }
        }
    }

    /// The standard properties for these settings: VLAN if set, security if anything is set, and the
    /// ACL and traffic limits custom properties if set.
    public var properties: [PortProperty] {
        var out: [PortProperty] = []
        if let vlan { out.append(.vlan(vlan)) }
        if !security.isDefault { out.append(.security(security)) }
        if !acl.isEmpty { out.append(.acl(acl)) }
        if !limits.isDefault { out.append(.trafficLimits(limits)) }
        return out
    }
}

extension VirtualSwitch {
    /// Makes `port`'s properties say `settings`: PORT_PROPERTY_ADD, UPDATE or DELETE for each that
    /// differs (VLAN, security, ACL, traffic limits, in that order). Each is vetoable; if one is
    /// refused, the changes before it are undone, so the port keeps its old settings and the error
    /// (naming the vetoing extension) is rethrown.
    public func apply(_ settings: PortSettings, to port: PortID) throws(SwitchError) {
        let old = PortSettings(properties: properties(of: port))
        let oldProps = old.properties, newProps = settings.properties
        let keys: [PropertyKey] = [.vlan, .security, .custom(PortProperty.aclKey), .custom(PortProperty.trafficLimitsKey)]
        var done: [(PortProperty?, PortProperty?)] = []
        for key in keys {
            let before = oldProps.first { $0.key == key }, after = newProps.first { $0.key == key }
            guard before != after else { continue }
            do throws(SwitchError) {
                try change(port, key, from: before, to: after)
                done.append((before, after))
            } catch {
                for (b, a) in done.reversed() {
                    if let k = (b ?? a)?.key { try? change(port, k, from: a, to: b) }
                }
                throw error
            }
        }
    }

    private func change(_ port: PortID, _ key: PropertyKey, from old: PortProperty?, to new: PortProperty?) throws(SwitchError) {
        switch (old, new) {
        case (nil, let p?): try addProperty(p, to: port)
        case (_?, let p?): try updateProperty(p, on: port)
        case (_?, nil): try deleteProperty(key, from: port)
        case (nil, nil): break
        }
    }
}
