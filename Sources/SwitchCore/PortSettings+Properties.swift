extension PortSettings {
    /// The settings a port's properties express (custom properties are not settings).
    public init(properties: [PortProperty]) {
        self.init()
        for p in properties {
            switch p {
            case .vlan(let v): vlan = v
            case .security(let s): security = s
            case .custom: break
            }
        }
    }

    /// The standard properties for these settings: VLAN if set, security if anything is set.
    public var properties: [PortProperty] {
        var out: [PortProperty] = []
        if let vlan { out.append(.vlan(vlan)) }
        if !security.isDefault { out.append(.security(security)) }
        return out
    }
}

extension VirtualSwitch {
    /// Makes `port`'s VLAN and security properties say `settings`: PORT_PROPERTY_ADD, UPDATE or
    /// DELETE for each that differs, VLAN first. Each is vetoable; if the security change is
    /// refused after the VLAN change went through, the VLAN change is undone, so the port keeps
    /// its old settings and the error (naming the vetoing extension) is rethrown.
    public func apply(_ settings: PortSettings, to port: PortID) throws(SwitchError) {
        let old = PortSettings(properties: properties(of: port))
        if settings.vlan != old.vlan { try setVLAN(settings.vlan, had: old.vlan, on: port) }
        guard settings.security != old.security else { return }
        do throws(SwitchError) {
            if settings.security.isDefault {
                try deleteProperty(.security, from: port)
            } else if old.security.isDefault {
                try addProperty(.security(settings.security), to: port)
            } else {
                try updateProperty(.security(settings.security), on: port)
            }
        } catch {
            if settings.vlan != old.vlan { try? setVLAN(old.vlan, had: settings.vlan, on: port) }
            throw error
        }
    }

    private func setVLAN(_ new: VLANPolicy?, had old: VLANPolicy?, on port: PortID) throws(SwitchError) {
        switch (old, new) {
        case (nil, let v?): try addProperty(.vlan(v), to: port)
        case (_?, let v?): try updateProperty(.vlan(v), on: port)
        case (_?, nil): try deleteProperty(.vlan, from: port)
        case (nil, nil): break
        }
    }
}
