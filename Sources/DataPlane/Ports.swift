import LinuxNet
import SwitchCore

extension SwitchRuntime {
    /// Plugs in a VM NIC: creates its persistent TAP (owned by the QEMU user, host stack off,
    /// MAC/MTU set, up), opens its driver, then PORT_CREATE (+ VLAN property) and NIC_CREATE.
    /// NIC_CONNECT follows by itself when QEMU attaches (carrier up). On a veto or any failure,
    /// everything created is removed again.
    ///
    /// With `isRestore` (daemon restart), an existing TAP is adopted as is, and the NIC connects at
    /// once if QEMU is already attached.
    @discardableResult
    public func startVMNIC(_ spec: VMNICSpec, isRestore: Bool = false) async throws(SwitchError) -> PortID {
        let name = try validName(spec.tap)
        let existing = try link(spec.tap)
        var created = false
        if let existing {
            guard isRestore else {
                throw SwitchError(.exists, "cannot create TAP \(spec.tap): a network device with that name already exists (ifindex \(existing.index))")
            }
            guard devices.isTAP(spec.tap) else {
                throw SwitchError(.exists, "cannot adopt \(spec.tap): it exists but is not a TAP device")
            }
        } else {
            do {
                try devices.createTAP(name, owner: spec.owner, group: spec.group, marker: spec.marker)
            } catch {
                throw SwitchError("cannot create TAP \(spec.tap)", cause: error)
            }
            created = true
            CrashPoint.reach("vm-start:tap-created")
        }
        do {
            try devices.configureVMTAP(spec.tap, mac: created ? spec.mac : nil, mtu: spec.mtu)
        } catch {
            if created { try? devices.deleteLink(spec.tap) }
            throw SwitchError("cannot configure TAP \(spec.tap)", cause: error)
        }
        do throws(SwitchError) {
            return try await plug(device: spec.tap, backing: .vmTAP, role: .vmTAP, isRestore: isRestore) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
                let properties: [PortProperty] = (spec.vlan.map { [.vlan(.access($0))] } ?? []) + spec.properties
                let id = try sw.createPort(name: spec.tap, friendlyName: spec.vmName + "/" + spec.tap, type: spec.type,
                                           nic: NICParameters(type: spec.type, vmName: spec.vmName, mtu: spec.mtu, permanentMAC: spec.mac),
                                           properties: properties, isRestore: isRestore)
                // NIC restore before NIC_CONNECT; blobs no extension takes are reported (onDiagnostic).
                if !spec.savedStates.isEmpty { _ = try? sw.restoreNICState(spec.savedStates, on: id) }
                return id
            }
        } catch {
            if created { try? devices.deleteLink(spec.tap) }
            throw error
        }
    }

    /// Adds an internal port: a TAP whose only queue tapswitch holds, its kernel side a host
    /// interface. With `netns`, the interface is moved into that network namespace (it arrives down
    /// there: configure addresses and bring it up inside the namespace). On any failure nothing is
    /// left behind (no device, no fd).
    @discardableResult
    public func addInternalPort(name: String, mac: MACAddress, netns: String? = nil, mtu: UInt32 = 1500,
                                properties: [PortProperty] = []) async throws(SwitchError) -> PortID {
        let ifname = try validName(name)
        let device: InternalPortDevice
        do {
            // A restart: the previous process handed the queue over, so the interface still exists.
            if netns == nil, let handedOver = try devices.adoptInternalPort(ifname, mac: mac, mtu: mtu, buffers: buffers) {
                device = handedOver
            } else {
                if try link(name) != nil {
                    throw SwitchError(.exists, "cannot create internal port \(name): a network device with that name already exists")
                }
                device = try devices.createInternalPort(ifname, mac: mac, mtu: mtu,
                                                        netnsPath: netns.map { $0.hasPrefix("/") ? $0 : "/run/netns/\($0)" }, buffers: buffers)
            }
        } catch let error as SwitchError {
            throw error
        } catch {
            throw SwitchError("cannot create internal port \(name)", cause: error)
        }
        // Closing the driver (on any failure below, too) destroys the non-persistent TAP.
        return try await adopt(device.driver, device: name, linkIndex: netns == nil ? device.index : nil,
                               backing: .internalTAP(netns: netns), connect: true) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
            try sw.createPort(name: name, type: .internal,
                              nic: NICParameters(type: .internal, vmName: "", mtu: mtu, permanentMAC: mac), properties: properties)
        }
    }

    /// Adds an existing netdev (NIC, bond, VLAN/VXLAN device, veth end) as the uplink.
    @discardableResult
    public func addExternalPort(device: String, properties: [PortProperty] = []) async throws(SwitchError) -> PortID {
        _ = try validName(device)
        guard let info = try link(device) else { throw SwitchError(.notFound, "cannot add external port \(device): no such network device") }
        do { try devices.bringUp(device) } catch { throw SwitchError("cannot bring up \(device)", cause: error) }
        let mac = info.mac.count == 6 ? MACAddress(info.mac[0], info.mac[1], info.mac[2], info.mac[3], info.mac[4], info.mac[5]) : MACAddress(rawValue: 0)
        return try await plug(device: device, backing: .external, role: .uplink, isRestore: false) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
            try sw.createPort(name: device, type: .external,
                              nic: NICParameters(type: .external, vmName: "", mtu: info.mtu, permanentMAC: mac), properties: properties)
        }
    }

    /// Removes a port through the whole stop sequence (NIC_DISCONNECT if connected, then, once
    /// in-flight frames drain, NIC_DELETE, PORT_TEARDOWN, PORT_DELETE). A VM TAP is deleted
    /// afterwards when `deleteDevice` is true; an uplink is never deleted.
    public func removePort(named name: String, deleteDevice: Bool = true) async throws(SwitchError) {
        let backing: PortBacking = try await withCheckedContinuation { (c: CheckedContinuation<Result<PortBacking, SwitchError>, Never>) in
            loop.async {
                guard let port = self.sw.port(named: name), let io = self.ports[port.id] else {
                    c.resume(returning: .failure(SwitchError(.notFound, "no port named \(name)")))
                    return
                }
                let backing = io.backing
                do throws(SwitchError) {
                    try self.sw.removePort(port.id) {
                        // PORT_DELETE done: only now is the driver closed (in-flight frames are finished).
                        io.close()
                        self.forget(io)
                        c.resume(returning: .success(backing))
                    }
                } catch {
                    c.resume(returning: .failure(error))
                }
            }
        }.get()
        if deleteDevice, backing == .vmTAP {
            do { try devices.deleteLink(name) } catch { throw SwitchError("port \(name) removed, but deleting its TAP failed", cause: error) }
        }
    }

    /// Starts the stop sequence and returns as soon as NIC_DISCONNECT has gone down the stack:
    /// `pending` is true when references hold the NIC or port, and the rest of the sequence then
    /// completes by itself when they drain. `deleted` runs (on the packet-loop queue; keep it
    /// short, no device work) after PORT_DELETE, once the port's fd is closed.
    public func beginRemovePort(named name: String, deleted: @escaping @Sendable (PortBacking) -> Void) async throws(SwitchError)
        -> (pending: Bool, backing: PortBacking) {
        try await onQueueThrowing { () throws(SwitchError) in
            guard let port = self.sw.port(named: name), let io = self.ports[port.id] else {
                throw SwitchError(.notFound, "no port named \(name)")
            }
            let backing = io.backing
            let done = try self.sw.removePort(port.id) {
                // PORT_DELETE done: only now is the driver closed (in-flight frames are finished).
                io.close()
                self.forget(io)
                deleted(backing)
            }
            return (!done, backing)
        }
    }

    /// Who holds port `name` (its NIC's references by extension, pended frames, port
    /// references); nil if there is no such port.
    /// NIC save: every port's extension state (``VirtualSwitch/saveNICState(of:)``) by port name;
    /// ports without any are left out. Runs on the packet loop, between batches.
    public func saveNICStates() async -> [String: [SavedNICState]] {
        await onQueueAsync {
            var out: [String: [SavedNICState]] = [:]
            for p in self.sw.ports {
                let states = self.sw.saveNICState(of: p.id)
                if !states.isEmpty { out[p.name] = states }
            }
            return out
        }
    }

    /// NIC save of one port (`nic save`); ``SwitchError/Code/notFound`` without such a port.
    public func saveNICState(named name: String) async throws(SwitchError) -> [SavedNICState] {
        try await onQueueThrowing { () throws(SwitchError) -> [SavedNICState] in
            guard let port = self.sw.port(named: name) else { throw SwitchError(.notFound, "NIC save: no port named \(name)") }
            guard self.sw.nic(of: port.id) != nil else {
                throw SwitchError(.invalidState, "NIC save: port \(name) has no NIC")
            }
            return self.sw.saveNICState(of: port.id)
        }
    }

    /// NIC restore for a port already re-created (internal and external ports, which connect at
    /// once). Returns the blobs no extension took.
    @discardableResult
    public func restoreNICState(_ states: [SavedNICState], named name: String) async throws(SwitchError) -> [SavedNICState] {
        try await onQueueThrowing { () throws(SwitchError) -> [SavedNICState] in
            guard let port = self.sw.port(named: name) else { throw SwitchError(.notFound, "NIC restore: no port named \(name)") }
            return try self.sw.restoreNICState(states, on: port.id)
        }
    }

    public func holders(named name: String) async -> PortHolders? {
        await onQueueAsync { () -> PortHolders? in
            guard let port = self.sw.port(named: name), let nic = self.sw.nicHolders(of: port.id) else { return nil }
            return PortHolders(portID: port.id, hasNIC: self.sw.nic(of: port.id) != nil, extensions: nic.extensions,
                               pendedFrames: nic.pendedFrames, portReferences: self.sw.portReferenceCount(of: port.id))
        }
    }

    /// Deletes the VM TAP `name` (after its port is gone).
    public func deleteTAP(named name: String) throws(SwitchError) {
        do { try devices.deleteLink(name) } catch { throw SwitchError("port \(name) removed, but deleting its TAP failed", cause: error) }
        CrashPoint.reach("vm-stop:tap-deleted")
    }

    /// Replaces the marker (alias) of the TAP `name`. Control path only.
    public func setMarker(named name: String, _ marker: String) throws(SwitchError) {
        do { try devices.setMarker(name, marker) } catch { throw SwitchError("cannot mark TAP \(name)", cause: error) }
    }

    /// The TAPs whose marker (alias) starts with `prefix`, with their kernel-side facts. Control path only.
    public func markedTAPs(prefix: String) throws(SwitchError) -> [LinkInfo] {
        let all: [LinkInfo]
        do { all = try devices.links() } catch { throw SwitchError("cannot list network devices", cause: error) }
        return all.filter { $0.alias?.hasPrefix(prefix) == true && devices.isTAP($0.name) }
    }

    /// Who may attach to the TAP `name`, as the kernel shows it (nil: unrestricted).
    public func tapOwnership(_ name: String) -> (owner: UInt32?, group: UInt32?) { devices.tapOwnership(name) }

    /// Changes a port's policy settings (its VLAN and security properties) between two batches,
    /// so the very next frame sees them. Each property change is vetoable; a veto leaves the old
    /// settings in force and names the extension.
    public func setPortSettings(named name: String, _ settings: PortSettings) async throws(SwitchError) {
        try await onQueueThrowing { () throws(SwitchError) in
            guard let port = self.sw.port(named: name) else { throw SwitchError(.notFound, "no port named '\(name)'") }
            try self.sw.apply(settings, to: port.id)
        }
    }

    // MARK: - Queries

    public func snapshot() async -> RuntimeSnapshot {
        await onQueueAsync {
            self.collectDeviceStatistics()
            let statuses = self.sw.ports.map { p in
                var counters = self.sw.counters(of: p.id) ?? PortCounters()
                if let io = self.ports[p.id] { io.driver.addDeviceDrops(to: &counters) }
                return PortStatus(port: p, nic: self.sw.nic(of: p.id), counters: counters,
                           properties: self.sw.properties(of: p.id), device: self.ports[p.id]?.device,
                           backing: self.ports[p.id]?.backing, offload: self.offloadDescription(p.id))
            }
            var loop = LoopStatistics()
            loop.batches = self.sw.batches
            loop.busyPollNanoseconds = self.loop.busyPollNanoseconds
            loop.macMoves = self.sw.macTable.moves
            loop.floodsWithoutPort = self.sw.floodsWithoutPort
            return RuntimeSnapshot(name: self.sw.configuration.name, ports: statuses, macEntries: self.sw.macTable.count,
                                  injectedFrames: self.sw.injectedFrames, switchDrops: self.sw.switchDropCounters, loop: loop)
        }
    }

    public func macEntries() async -> [MACTable.Entry] {
        await onQueueAsync { self.sw.macEntries() }
    }

    public func extensions() async -> [ExtensionInfo] {
        await onQueueAsync { self.sw.extensions }
    }

    /// Changes the unknown-unicast policy without disturbing ports.
    public func setUnknownUnicast(_ policy: UnknownUnicastPolicy) async {
        await onQueueAsync { self.sw.unknownUnicast = policy }
    }

    /// Enables an extension. `make` runs on the packet-loop queue and builds it there, so the
    /// extension (which need not be Sendable) lives only on that queue.
    public func enableExtension(position: Int? = nil, _ make: @escaping @Sendable () -> any SwitchExtension) async throws(SwitchError) {
        try await onQueueThrowing { () throws(SwitchError) in
            do throws(SwitchError) { try self.sw.enable(make(), position: position) } catch { throw error }
        }
    }

    /// Replaces an enabled extension by a new instance (new settings) at the same place in the
    /// stack, between two batches. Its counters start again.
    public func replaceExtension(named name: String, _ make: @escaping @Sendable () -> any SwitchExtension) async throws(SwitchError) {
        try await onQueueThrowing { () throws(SwitchError) in
            guard let info = self.sw.extensions.first(where: { $0.name == name }) else {
                throw SwitchError(.notFound, "extension \(name) is not enabled")
            }
            try self.sw.disable(name)
            try self.sw.enable(make(), position: info.position)
        }
    }

    /// Disables the enabled extension `name` (it sees ``SwitchExtension/detached(from:)``); the
    /// next batch no longer passes through it.
    public func disableExtension(named name: String) async throws(SwitchError) {
        try await onQueueThrowing { () throws(SwitchError) in try self.sw.disable(name) }
    }

    /// Moves the enabled extension `name` to `position` within its class (0 = top).
    public func moveExtension(named name: String, to position: Int) async throws(SwitchError) {
        try await onQueueThrowing { () throws(SwitchError) in try self.sw.reorder(name, to: position) }
    }

    /// Those of the TAPs `names` a guest is attached to right now (carrier up, read from the device,
    /// not from the last notification: QEMU may have exited a moment ago). Control path only.
    public func attachedTAPs(_ names: [String]) -> [String] {
        names.filter { (try? devices.link(named: $0))??.hasCarrier == true }
    }

    /// Runs `body` with the switch on the packet-loop queue (tests and tools).
    public func withSwitch<T: Sendable>(_ body: @escaping @Sendable (VirtualSwitch) -> T) async -> T {
        await onQueueAsync { body(self.sw) }
    }

    // MARK: - Helpers

    func validName(_ s: String) throws(SwitchError) -> InterfaceName {
        do { return try InterfaceName(s) } catch { throw SwitchError(.invalidArgument, error.description) }
    }

    func link(_ name: String) throws(SwitchError) -> LinkInfo? {
        do { return try devices.link(named: name) } catch { throw SwitchError("cannot query \(name)", cause: error) }
    }

    /// Opens the driver of `device` (a VM TAP or an uplink) and creates the port on the queue.
    func plug(device: String, backing: PortBacking, role: PacketPortRole, isRestore: Bool,
              _ create: @escaping @Sendable (VirtualSwitch) throws(SwitchError) -> PortID) async throws(SwitchError) -> PortID {
        guard let info = try link(device) else { throw SwitchError(.notFound, "network device \(device) vanished") }
        let driver: any PortDriver
        do {
            driver = try devices.openDriver(on: info, role: role, buffers: buffers)
        } catch {
            throw SwitchError("cannot open the port driver on \(device)", cause: error)
        }
        return try await adopt(driver, device: device, linkIndex: info.index, backing: backing, connect: info.hasCarrier,
                               isRestore: isRestore, create)
    }

    /// Hands `driver` to the queue, creates the port there and starts watching the driver; connects
    /// the NIC when `connect`. On failure the driver is closed.
    func adopt(_ driver: any PortDriver, device: String, linkIndex: Int32?, backing: PortBacking, connect: Bool, isRestore: Bool = false,
               _ create: @escaping @Sendable (VirtualSwitch) throws(SwitchError) -> PortID) async throws(SwitchError) -> PortID {
        let handover = Handover(value: driver)
        return try await onQueueThrowing { () throws(SwitchError) -> PortID in
            let driver = handover.value
            let id: PortID
            do throws(SwitchError) { id = try create(self.sw) } catch {
                driver.close()
                throw error
            }
            let io = PortIO(id: id, device: device, backing: backing, driver: driver, linkIndex: linkIndex)
            // Also when bypassing: a socket handed over by the previous run keeps the path it had then.
            do { try driver.setTransmitThroughQdisc(self.transmitThroughQdisc) } catch {
                self.logger.error("\(device) keeps its previous transmit path: \(error)")
            }
            self.ports[id] = io
            if let linkIndex { self.byIndex[linkIndex] = io }
            do throws(SwitchError) {
                if self.receiveHeld {
                    self.heldPorts.append(io)
                } else {
                    try io.start(on: self.loop) { [unowned self, unowned io] events in self.drain(io, events: events) }
                }
            } catch {
                io.close()
                self.forget(io)
                _ = try? self.sw.removePort(id)
                throw SwitchError("cannot watch \(device)", cause: error)
            }
            self.attachOffload(io)
            if connect {
                io.lastCarrier = true
                do { try self.sw.connectNIC(on: id, isRestore: isRestore) } catch {
                    self.logger.error("NIC_CONNECT for \(device) failed: \(error)")
                }
            }
            return id
        }
    }
}

extension SwitchRuntime {
    /// Until ``releaseReceive()``, ports plugged in are created but not read: while a restarted
    /// daemon re-adopts its ports, the frames waiting in their handed-over rings stay there until
    /// every destination port exists (a frame read earlier would be flooded past a port not
    /// adopted yet, and lost to it).
    public func holdReceive() async {
        await onQueueAsync { self.receiveHeld = true }
    }

    /// Opens the receive sockets of the existing VM TAPs `names` in parallel (see
    /// ``DeviceLayer/prepareReceive(forTAPs:)``), before they are re-adopted one by one.
    public func prepareReceive(forTAPs names: [String]) async {
        let devices = self.devices
        await Task.detached { devices.prepareReceive(forTAPs: names) }.value
    }

    /// Starts reading the ports plugged in since ``holdReceive()``.
    public func releaseReceive() async {
        await onQueueAsync {
            self.receiveHeld = false
            let held = self.heldPorts
            self.heldPorts.removeAll()
            for io in held where !io.closed {
                do throws(SwitchError) {
                    try io.start(on: self.loop) { [unowned self, unowned io] events in self.drain(io, events: events) }
                } catch {
                    self.logger.error("cannot watch \(io.device): \(error)")
                }
            }
        }
    }
}

/// What keeps a port from being deleted (see ``SwitchRuntime/holders(named:)``).
public struct PortHolders: Sendable {
    public let portID: PortID
    public let hasNIC: Bool
    /// NIC references by the extension that took them.
    public let extensions: [String: Int]
    /// Frames pended by extensions (each holds the NIC until completed).
    public let pendedFrames: Int
    public let portReferences: Int
}
