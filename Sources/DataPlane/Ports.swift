import CTapShim
import LinuxNet
import SwitchCore

#if canImport(Glibc)
import Glibc
#endif

extension SwitchRuntime {
    /// Plugs in a VM NIC: creates its persistent TAP (owned by the QEMU user, host stack off,
    /// MAC/MTU set, up), opens the AF_PACKET socket on it, then PORT_CREATE (+ VLAN property) and
    /// NIC_CREATE. NIC_CONNECT follows by itself when QEMU attaches (carrier up). On a veto or any
    /// failure, everything created is removed again.
    ///
    /// With `isRestore` (daemon restart), an existing TAP is adopted as is, and the NIC connects at
    /// once if QEMU is already attached.
    @discardableResult
    public func startVMNIC(_ spec: VMNICSpec, isRestore: Bool = false) async throws(DataPlaneError) -> PortID {
        let name = try validName(spec.tap)
        let existing = try link(spec.tap)
        var created = false
        if let existing {
            guard isRestore else {
                throw SwitchError(.exists, "cannot create TAP \(spec.tap): a network device with that name already exists (ifindex \(existing.index))")
            }
            guard TapDevice.isTap(spec.tap) else {
                throw SwitchError(.exists, "cannot adopt \(spec.tap): it exists but is not a TAP device")
            }
        } else {
            do {
                try TapDevice.createPersistent(name: name, owner: spec.owner, group: spec.group)
            } catch {
                throw DataPlaneError("cannot create TAP \(spec.tap): \(error)")
            }
            created = true
        }
        do {
            // The host's own stack stays off the VM's segment (no IPv6 autoconf, no addresses).
            try net.disableHostStack(spec.tap)
            try net.setLink(spec.tap, mac: created ? spec.mac.bytes : nil, mtu: spec.mtu, up: true)
        } catch {
            if created { try? net.deleteLink(spec.tap) }
            throw DataPlaneError("cannot configure TAP \(spec.tap): \(error)")
        }
        do throws(DataPlaneError) {
            return try await plug(device: spec.tap, backing: .vmTAP, isRestore: isRestore) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
                let properties: [PortProperty] = spec.vlan.map { [.vlan(.access($0))] } ?? []
                return try sw.createPort(name: spec.tap, friendlyName: spec.vmName + "/" + spec.tap, type: spec.type,
                                         nic: NICParameters(type: spec.type, vmName: spec.vmName, mtu: spec.mtu, permanentMAC: spec.mac),
                                         properties: properties, isRestore: isRestore)
            }
        } catch {
            if created { try? net.deleteLink(spec.tap) }
            throw error
        }
    }

    /// Adds an internal port: a TAP whose fd tapswitch holds, its kernel side a host interface.
    /// With `netns`, the interface is moved into that network namespace (it arrives down there:
    /// configure addresses and bring it up inside the namespace).
    @discardableResult
    public func addInternalPort(name: String, mac: MACAddress, netns: String? = nil, mtu: UInt32 = 1500) async throws(DataPlaneError) -> PortID {
        let ifname = try validName(name)
        if try link(name) != nil { throw SwitchError(.exists, "cannot create internal port \(name): a network device with that name already exists") }
        var fd: Int32 = -1
        do {
            try TapDevice.createPersistent(name: ifname, owner: nil, group: nil)
            fd = try TapDevice.attach(name: ifname, vnetHeader: true, nonBlocking: true)
            // Not persistent: the host interface lives exactly as long as our fd.
            guard ts_ioctl_ulong(fd, TS_TUNSETPERSIST, 0) == 0 else {
                let code = errno
                _ = Glibc.close(fd)
                throw SystemError(operation: "TUNSETPERSIST 0", device: name, errno: code)
            }
            // Let the host stack hand us TSO/GSO superframes and partial checksums.
            try TapDevice.setOffload(fd: fd, csum: true, tso4: true, tso6: true)
            try net.disableHostStack(name)
            try net.setLink(name, mac: mac.bytes, mtu: mtu, up: true)
        } catch {
            try? net.deleteLink(name)
            throw DataPlaneError("cannot create internal port \(name): \(error)")
        }
        guard let info = try? net.link(named: name) else {
            _ = Glibc.close(fd)
            throw DataPlaneError("internal port \(name) vanished while being created")
        }
        if let netns {
            do { try net.moveLink(name, toNetnsAt: netns.hasPrefix("/") ? netns : "/run/netns/\(netns)") } catch {
                _ = Glibc.close(fd)
                throw DataPlaneError("cannot move internal port \(name) into network namespace \(netns): \(error)")
            }
        }
        do throws(DataPlaneError) {
            return try await adoptFD(fd, device: name, index: info.index, backing: .internalTAP(netns: netns), connect: true) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
                try sw.createPort(name: name, type: .internal,
                                  nic: NICParameters(type: .internal, vmName: "", mtu: mtu, permanentMAC: mac))
            }
        } catch {
            // Closing our fd destroys the (non-persistent) TAP.
            throw error
        }
    }

    /// Adds an existing netdev (NIC, bond, VLAN/VXLAN device, veth end) as the uplink.
    @discardableResult
    public func addExternalPort(device: String) async throws(DataPlaneError) -> PortID {
        _ = try validName(device)
        guard let info = try link(device) else { throw SwitchError(.notFound, "cannot add external port \(device): no such network device") }
        do { try net.setLink(device, up: true) } catch { throw DataPlaneError("cannot bring up \(device): \(error)") }
        let mac = info.mac.count == 6 ? MACAddress(info.mac[0], info.mac[1], info.mac[2], info.mac[3], info.mac[4], info.mac[5]) : MACAddress(rawValue: 0)
        return try await plug(device: device, backing: .external, isRestore: false, promiscuous: true) { (sw: VirtualSwitch) throws(SwitchError) -> PortID in
            try sw.createPort(name: device, type: .external,
                              nic: NICParameters(type: .external, vmName: "", mtu: info.mtu, permanentMAC: mac))
        }
    }

    /// Removes a port through the whole stop sequence (NIC_DISCONNECT if connected, then, once
    /// in-flight frames drain, NIC_DELETE, PORT_TEARDOWN, PORT_DELETE). A VM TAP is deleted
    /// afterwards when `deleteDevice` is true; an uplink is never deleted.
    public func removePort(named name: String, deleteDevice: Bool = true) async throws(DataPlaneError) {
        let backing: PortBacking = try await withCheckedContinuation { (c: CheckedContinuation<Result<PortBacking, DataPlaneError>, Never>) in
            loop.async {
                guard let port = self.sw.port(named: name), let io = self.ports[port.id] else {
                    c.resume(returning: .failure(SwitchError(.notFound, "no port named \(name)")))
                    return
                }
                let backing = io.backing
                do throws(SwitchError) {
                    try self.sw.removePort(port.id) {
                        // PORT_DELETE done: only now is the fd closed (in-flight frames are finished).
                        io.close()
                        self.ports[port.id] = nil
                        if self.byIndex[io.interfaceIndex] === io { self.byIndex[io.interfaceIndex] = nil }
                        c.resume(returning: .success(backing))
                    }
                } catch {
                    c.resume(returning: .failure(DataPlaneError(error)))
                }
            }
        }.get()
        if deleteDevice, backing == .vmTAP {
            do { try net.deleteLink(name) } catch { throw DataPlaneError("port \(name) removed, but deleting its TAP failed: \(error)") }
        }
    }

    // MARK: - Queries

    public func snapshot() async -> SwitchSnapshot {
        await onQueueAsync {
            self.collectRingStatistics()
            let statuses = self.sw.ports.map { p in
                var counters = self.sw.counters(of: p.id) ?? PortCounters()
                if let io = self.ports[p.id] { io.addKernelDrops(to: &counters) }
                return PortStatus(port: p, nic: self.sw.nic(of: p.id), counters: counters,
                           properties: self.sw.properties(of: p.id), device: self.ports[p.id]?.device ?? p.name,
                           backing: self.ports[p.id]?.backing ?? .vmTAP)
            }
            return SwitchSnapshot(name: self.sw.configuration.name, ports: statuses, macEntries: self.sw.macTable.count,
                                  injectedFrames: self.sw.injectedFrames, switchDrops: self.sw.switchDropCounters)
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
    public func enableExtension(_ make: @escaping @Sendable () -> any SwitchExtension) async throws(DataPlaneError) {
        try await onQueueThrowing { () throws(DataPlaneError) in
            do throws(SwitchError) { try self.sw.enable(make()) } catch { throw DataPlaneError(error) }
        }
    }

    /// Runs `body` with the switch on the packet-loop queue (tests and tools).
    public func withSwitch<T: Sendable>(_ body: @escaping @Sendable (VirtualSwitch) -> T) async -> T {
        await onQueueAsync { body(self.sw) }
    }

    // MARK: - Helpers

    func validName(_ s: String) throws(DataPlaneError) -> InterfaceName {
        do { return try InterfaceName(s) } catch { throw SwitchError(.invalidArgument, error.description) }
    }

    func link(_ name: String) throws(DataPlaneError) -> LinkInfo? {
        do { return try net.link(named: name) } catch { throw DataPlaneError("cannot query \(name): \(error)") }
    }

    /// Opens the AF_PACKET socket on `device` and creates the port in the switch on the queue.
    func plug(device: String, backing: PortBacking, isRestore: Bool, promiscuous: Bool = false,
              _ create: @escaping @Sendable (VirtualSwitch) throws(SwitchError) -> PortID) async throws(DataPlaneError) -> PortID {
        guard let info = try link(device) else { throw DataPlaneError("network device \(device) vanished") }
        let fd: Int32
        do {
            let socket = try PacketSocket(interfaceIndex: info.index, interfaceName: device,
                                          options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true,
                                                         receiveBuffer: 4 << 20, sendBuffer: 4 << 20,
                                                         receiveRing: Self.ringGeometry))
            if promiscuous { try Self.setPromiscuous(socket.fileDescriptor, index: info.index, device: device) }
            fd = socket.release()
        } catch {
            throw DataPlaneError("cannot open AF_PACKET socket on \(device): \(error)")
        }
        return try await adoptFD(fd, device: device, index: info.index, backing: backing, connect: info.hasCarrier,
                                 isRestore: isRestore, ring: Self.ringGeometry, create)
    }

    /// Creates the port on the queue and starts reading `fd`; connects the NIC when `connect`.
    func adoptFD(_ fd: Int32, device: String, index: Int32, backing: PortBacking, connect: Bool, isRestore: Bool = false,
                 ring geometry: ReceiveRing.Geometry? = nil,
                 _ create: @escaping @Sendable (VirtualSwitch) throws(SwitchError) -> PortID) async throws(DataPlaneError) -> PortID {
        try await onQueueThrowing { () throws(DataPlaneError) -> PortID in
            // Mapped here because the ring, like the fd's other state, belongs to the queue.
            var ring: ReceiveRing?
            if let geometry {
                do { ring = try ReceiveRing(fileDescriptor: fd, geometry: geometry, interfaceName: device) } catch {
                    _ = Glibc.close(fd)
                    throw DataPlaneError("cannot map the receive ring of \(device): \(error)")
                }
            }
            let id: PortID
            do throws(SwitchError) { id = try create(self.sw) } catch {
                _ = Glibc.close(fd)
                throw DataPlaneError(error)
            }
            let io = PortIO(id: id, device: device, backing: backing, fd: fd, interfaceIndex: index)
            io.ring = ring
            if backing == .vmTAP { io.segmentingFD = Self.openTransmitSocket(index: index, device: device, bypass: false) }
            if geometry != nil { io.transmitFD = Self.openTransmitSocket(index: index, device: device, bypass: true) }
            self.ports[id] = io
            self.byIndex[index] = io
            do throws(DataPlaneError) {
                try io.start(on: self.loop) { [unowned self, unowned io] events in self.drain(io, events: events) }
            } catch {
                io.close()
                self.ports[id] = nil
                self.byIndex[index] = nil
                _ = try? self.sw.removePort(id)
                throw DataPlaneError("cannot watch \(device): \(error)")
            }
            if connect {
                io.lastCarrier = true
                do { try self.sw.connectNIC(on: id, isRestore: isRestore) } catch {
                    self.logger.error("NIC_CONNECT for \(device) failed: \(error)")
                }
            }
            return id
        }
    }

    /// Receive ring of every AF_PACKET port: 512 slots of 2 KiB (1 MiB per port), room for a few
    /// milliseconds of a busy VM while the loop serves others. A slot holds a full-size frame;
    /// bigger ones (GSO superframes) come whole through the socket queue.
    static let ringGeometry = ReceiveRing.Geometry(frameSize: 2048, frameCount: 512)

    /// A transmit-only AF_PACKET socket with virtio-net headers. With `bypass`, straight to the
    /// driver (ENOBUFS when the TAP queue is full); without, through the qdisc, which segments GSO
    /// frames for a TAP whose reader has no offloads. -1 if it cannot be opened (then the port sends
    /// on its receive socket, or such GSO frames are dropped and counted).
    static func openTransmitSocket(index: Int32, device: String, bypass: Bool) -> Int32 {
        let options = PacketSocket.Options(vnetHeader: true, auxData: false, ignoreOutgoing: false, qdiscBypass: bypass,
                                           sendBuffer: bypass ? 4 << 20 : nil, receives: false)
        do {
            return try PacketSocket(interfaceIndex: index, interfaceName: device, options: options).release()
        } catch {
            return -1
        }
    }

    static func setPromiscuous(_ fd: Int32, index: Int32, device: String) throws {
        var mreq = packet_mreq()
        mreq.mr_ifindex = index
        mreq.mr_type = UInt16(PACKET_MR_PROMISC)
        let rc = setsockopt(fd, Int32(SOL_PACKET), Int32(PACKET_ADD_MEMBERSHIP), &mreq, socklen_t(MemoryLayout<packet_mreq>.size))
        if rc != 0 { throw SystemError(operation: "PACKET_ADD_MEMBERSHIP(PROMISC)", device: device, errno: errno) }
    }
}
