extension VirtualSwitch {
    /// The enabled extensions, top of the stack first, each with its position within its class
    /// (the `position` ``enable(_:position:)`` and ``reorder(_:to:)`` take) and its counters.
    public var extensions: [ExtensionInfo] {
        var inClass: [ExtensionClass: Int] = [:]
        return stack.map { ext in
            let position = inClass[ext.extensionClass, default: 0]
            inClass[ext.extensionClass] = position + 1
            return ExtensionInfo(name: ext.name, extensionClass: ext.extensionClass, position: position, counters: ext.counters)
        }
    }

    /// The enabled extension named `name` (for its own queries, e.g. an ACL's hit counters); nil if
    /// none. Use it on the switch's queue only, like the switch.
    public func enabledExtension(named name: String) -> (any SwitchExtension)? { stack.first { $0.name == name } }

    /// Enables an extension. It goes into its class's band of the stack (capture, then filtering,
    /// then forwarding) at `position` within that band (nil: at the bottom of the band). It first
    /// sees the existing ports through ``SwitchExtension/attached(to:)``, then live requests.
    public func enable(_ ext: any SwitchExtension, position: Int? = nil) throws(SwitchError) {
        try checkNotBusy("enabling extension \(ext.name)")
        guard !stack.contains(where: { $0.name == ext.name }) else {
            throw SwitchError(.exists, "extension \(ext.name) is already enabled")
        }
        if ext.extensionClass == .forwarding, let f = forwardingIndex {
            throw SwitchError(.exists, "cannot enable forwarding extension \(ext.name): \(stack[f].name) is already the forwarding extension (at most one)")
        }
        let band = stack.indices.filter { stack[$0].extensionClass == ext.extensionClass }
        let bandStart = stack.firstIndex { $0.extensionClass > ext.extensionClass } ?? stack.count
        let first = band.first ?? bandStart
        let insertAt: Int
        if let position {
            guard position >= 0 && position <= band.count else {
                throw SwitchError(.invalidArgument, "position \(position) for \(ext.name) is outside 0...\(band.count) (\(ext.extensionClass.rawValue) extensions enabled: \(band.count))")
            }
            insertAt = first + position
        } else {
            insertAt = band.last.map { $0 + 1 } ?? bandStart
        }
        stack.insert(ext, at: insertAt)
        reindex()
        controlBusy = true
        ext.attached(to: self)
        controlBusy = false
        settleDeferred()
        // A new extension may need to see every frame; its answers replace the cached ones. A
        // capture extension changes no decision: ports it lets be offloaded keep their entries.
        recomputeOffload(keepingAllowed: ext.extensionClass == .capture)
    }

    /// Disables an extension by name.
    public func disable(_ name: String) throws(SwitchError) {
        try checkNotBusy("disabling extension \(name)")
        guard let i = stack.firstIndex(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "no enabled extension named \(name)")
        }
        let ext = stack.remove(at: i)
        reindex()
        let owner = ObjectIdentifier(ext)
        timers.removeAll { $0.owner == owner }
        // A NIC_DISCONNECT it pended cannot wait for it any more.
        for r in records.values where r.pendedDisconnect?.extensionName == name {
            r.pendedDisconnect?.completing = true
            needsSettle = true
        }
        controlBusy = true
        ext.detached(from: self)
        controlBusy = false
        settleDeferred()
        recomputeOffload(keepingAllowed: ext.extensionClass == .capture)
    }

    /// Moves an enabled extension to `position` within its class's band (0 = top of the band).
    public func reorder(_ name: String, to position: Int) throws(SwitchError) {
        guard let i = stack.firstIndex(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "no enabled extension named \(name)")
        }
        let ext = stack[i]
        let bandCount = stack.filter { $0.extensionClass == ext.extensionClass }.count
        guard position >= 0 && position < bandCount else {
            throw SwitchError(.invalidArgument, "position \(position) for \(name) is outside 0..<\(bandCount)")
        }
        stack.remove(at: i)
        let first = stack.firstIndex { $0.extensionClass >= ext.extensionClass } ?? stack.count
        stack.insert(ext, at: first + position)
        reindex()
    }

    func reindex() {
        forwardingIndex = stack.firstIndex { $0.extensionClass == .forwarding }
        captureTaps = stack.filter { $0.extensionClass == .capture }
        stackReporters = stack.map { ext in
            if let i = reporterNames.firstIndex(of: ext.name) { return UInt16(i) }
            reporterNames.append(ext.name)
            if reporterNames.count * kindStride > kindIndex.count { rebuildKindIndex(stride: kindStride, reporters: reporterNames.count + 8) }
            return UInt16(reporterNames.count - 1)
        }
    }

    /// Sends a request down the stack; a veto by a filtering or forwarding extension on a vetoable
    /// request stops it there, and the extensions above see the outcome.
    @discardableResult
    func passDown(_ request: OIDRequest) -> ControlOutcome {
        controlBusy = true
        defer {
            controlBusy = false
            settleDeferred()
        }
        let current = stack
        for (k, ext) in current.enumerated() {
            callbackExtension = ext.name
            defer { callbackExtension = nil }
            let verdict = ext.control(request, switch: self)
            if verdict == .pend {
                guard request.kind == .nicDisconnect, ext.extensionClass == .forwarding, let r = records[request.port.id] else {
                    onDiagnostic?("\(ext.name): only the forwarding extension may pend a request, and only NIC_DISCONNECT; \(request.kind.rawValue) goes on")
                    continue
                }
                // The forwarding extension is the bottom of the stack: nothing below it to ask. The
                // extensions see the completion when it completes (completePendedDisconnect).
                r.pendedDisconnect = PendedDisconnect(request: request, extensionName: ext.name)
                return .completed
            }
            guard case .veto(let reason) = verdict else { continue }
            guard request.kind.isVetoable, ext.extensionClass != .capture else {
                onDiagnostic?("\(ext.name): \(ext.extensionClass.rawValue) extension vetoed \(request.kind.rawValue), which it may not veto; ignored")
                continue
            }
            let outcome = ControlOutcome.vetoed(by: ext.name, reason: reason)
            for above in current[..<k] {
                callbackExtension = above.name
                above.controlCompleted(request, outcome: outcome, switch: self)
            }
            return outcome
        }
        for ext in current {
            callbackExtension = ext.name
            ext.controlCompleted(request, outcome: .completed, switch: self)
        }
        callbackExtension = nil
        return .completed
    }

    func passDownOrThrow(_ request: OIDRequest) throws(SwitchError) {
        if case .vetoed(let name, let reason) = passDown(request) {
            onEvent?(LifecycleEvent(kind: .veto, port: request.port, nic: request.nic, vetoedRequest: request.kind,
                                    vetoingExtension: name, vetoReason: reason, isRestore: request.isRestore))
            let what = request.kind.rawValue + (request.property.map { " (\($0.key))" } ?? "")
            throw SwitchError(.vetoed, "\(what) for port \(request.port.name) vetoed by extension \(name): \(reason)",
                              vetoingExtension: name, vetoReason: reason)
        }
    }

    /// Completes deferred deletes whose references drained while a control callback was running,
    /// and pended NIC_DISCONNECTs that were completed (once the frames resumed before are processed).
    func settleDeferred() {
        guard needsSettle, !controlBusy, !inBatch else { return }
        needsSettle = false
        for r in records.values {
            if let pended = r.pendedDisconnect, pended.completing {
                if resumeQueue.isEmpty { finishPendedDisconnect(r, pended) } else { needsSettle = true }
            }
            if r.nicDeleteDeferred && r.nicReferences == 0 {
                r.nicDeleteDeferred = false
                finishNICDelete(r, isRestore: r.removalIsRestore)
            } else if r.portDeleteDeferred && r.portReferences == 0 {
                r.portDeleteDeferred = false
                finishPortDelete(r, isRestore: r.removalIsRestore)
            }
        }
    }

    /// Ends a NIC_DISCONNECT the forwarding extension pended (Hyper-V: it forwards the OID). Frames
    /// it resumed before this call are still delivered to the NIC: the disconnect finishes once
    /// they have been processed (at once if none wait). Any context, including a batch or a timer.
    public func completePendedDisconnect(on port: PortID) throws(SwitchError) {
        let r = try record(port, for: "NIC_DISCONNECT completion")
        guard let pended = r.pendedDisconnect, !pended.completing else {
            throw SwitchError(.invalidState, "NIC_DISCONNECT completion for port \(describe(r)): no NIC_DISCONNECT is pended")
        }
        pended.completing = true
        needsSettle = true
        settleDeferred()
    }

    /// Whether the port's NIC_DISCONNECT is pended, and by which extension.
    public func pendedDisconnect(on port: PortID) -> String? { records[port]?.pendedDisconnect?.extensionName }

    func finishPendedDisconnect(_ r: PortRecord, _ pended: PendedDisconnect) {
        r.pendedDisconnect = nil
        let request = pended.request
        controlBusy = true
        for ext in stack {
            callbackExtension = ext.name
            ext.controlCompleted(request, outcome: .completed, switch: self)
        }
        callbackExtension = nil
        controlBusy = false
        finishDisconnect(r, wasConnected: pended.wasConnected, isRestore: request.isRestore)
        if let held = r.nicHolders[pended.holder] { r.nicHolders[pended.holder] = held <= 1 ? nil : held - 1 }
        releaseNICReference(r)
    }
}

// MARK: - Port properties

extension VirtualSwitch {
    /// PORT_PROPERTY_ADD. Vetoable; refused if a property with the same key exists.
    public func addProperty(_ property: PortProperty, to port: PortID, isRestore: Bool = false) throws(SwitchError) {
        try checkNotBusy("PORT_PROPERTY_ADD")
        let r = try propertyTarget(port, "PORT_PROPERTY_ADD")
        try validate(property, r)
        if r.properties.contains(where: { $0.key == property.key }) {
            throw SwitchError(.exists, "PORT_PROPERTY_ADD refused for port \(describe(r)): it already has a \(property.key) property (use update)")
        }
        try passDownOrThrow(OIDRequest(kind: .propertyAdd, port: r.params, nic: r.nic, property: property, isRestore: isRestore))
        r.properties.append(property)
        apply(property, to: r.slot)
        recomputeOffload(slot: r.slot)
    }

    /// PORT_PROPERTY_UPDATE of the property with the same key. Vetoable.
    public func updateProperty(_ property: PortProperty, on port: PortID) throws(SwitchError) {
        try checkNotBusy("PORT_PROPERTY_UPDATE")
        let r = try propertyTarget(port, "PORT_PROPERTY_UPDATE")
        try validate(property, r)
        guard let i = r.properties.firstIndex(where: { $0.key == property.key }) else {
            throw SwitchError(.notFound, "PORT_PROPERTY_UPDATE refused for port \(describe(r)): it has no \(property.key) property")
        }
        try passDownOrThrow(OIDRequest(kind: .propertyUpdate, port: r.params, nic: r.nic, property: property, isRestore: false))
        r.properties[i] = property
        apply(property, to: r.slot)
        recomputeOffload(slot: r.slot)
    }

    /// PORT_PROPERTY_DELETE. Vetoable.
    public func deleteProperty(_ key: PropertyKey, from port: PortID) throws(SwitchError) {
        try checkNotBusy("PORT_PROPERTY_DELETE")
        let r = try propertyTarget(port, "PORT_PROPERTY_DELETE")
        guard let i = r.properties.firstIndex(where: { $0.key == key }) else {
            throw SwitchError(.notFound, "PORT_PROPERTY_DELETE refused for port \(describe(r)): it has no \(key) property")
        }
        try passDownOrThrow(OIDRequest(kind: .propertyDelete, port: r.params, nic: r.nic, property: r.properties[i], isRestore: false))
        r.properties.remove(at: i)
        if key == .vlan { setVLANMode(slot: r.slot, VLANPolicy.defaultPolicy(for: r.params.type)) }
        recomputeOffload(slot: r.slot)
    }

    func propertyTarget(_ port: PortID, _ op: String) throws(SwitchError) -> PortRecord {
        let r = try record(port, for: op)
        guard r.params.state == .created, !r.removing else {
            throw SwitchError(.invalidState, "\(op) refused for port \(describe(r)): port is \(r.removing ? "being removed" : r.params.state.rawValue)")
        }
        return r
    }

    func validate(_ property: PortProperty, _ r: PortRecord) throws(SwitchError) {
        switch property {
        case .vlan(.access(let id)):
            guard (1...4094).contains(id) else {
                throw SwitchError(.invalidArgument, "VLAN property for port \(describe(r)): access VLAN \(id) out of range 1...4094")
            }
        case .vlan(.trunk(let allowed, let native)):
            if let bad = allowed.first(where: { !(1...4094).contains($0) }) {
                throw SwitchError(.invalidArgument, "VLAN property for port \(describe(r)): trunk VLAN \(bad) out of range 1...4094")
            }
            if let native, !(0...4094).contains(native) {
                throw SwitchError(.invalidArgument, "VLAN property for port \(describe(r)): native VLAN \(native) out of range 1...4094 (0: the untagged domain)")
            }
        case .vlan(.untagged):
            break
        case .custom(let key, _, let data):
            guard !key.isEmpty else { throw SwitchError(.invalidArgument, "custom property for port \(describe(r)): empty key") }
            guard data.count <= 65536 else { throw SwitchError(.invalidArgument, "custom property \(key): \(data.count) bytes exceeds 64 KiB") }
        case .security(let policy):
            if let problem = policy.problem {
                throw SwitchError(.invalidArgument, "security property for port \(describe(r)): \(problem)")
            }
        }
    }

    func apply(_ property: PortProperty, to slot: UInt16) {
        if case .vlan(let policy) = property { setVLANMode(slot: slot, policy) }
    }

    func setVLANMode(slot: UInt16, _ policy: VLANPolicy) {
        let s = Int(slot)
        for w in 0..<64 { trunkBitmaps[s * 64 + w] = 0 }
        switch policy {
        case .untagged:
            slots[s].vlanMode = SlotInfo.untagged
        case .access(let id):
            slots[s].vlanMode = SlotInfo.access
            slots[s].accessVLAN = id
        case .trunk(let allowed, let native):
            slots[s].vlanMode = SlotInfo.trunk
            slots[s].nativeVLAN = native ?? SlotInfo.noVLAN
            for v in allowed { trunkBitmaps[s * 64 + Int(v >> 6)] |= 1 << UInt64(v & 63) }
        }
        macTable.flush(portSlot: slot)
    }
}
