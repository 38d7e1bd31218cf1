import LinuxNet
import SwitchCore

/// A VXLAN segment as the runtime plugs it in: the kernel VXLAN device and the VLAN it carries.
public struct SegmentDevice: Sendable, Equatable {
    /// The VXLAN device's name (also the port's).
    public var name: String
    public var vlan: VLANID
    public var vni: UInt32
    public var local: String
    public var underlay: String
    public var flood: [String]
    public var udpPort: UInt16
    public var learning: Bool
    public var ageing: UInt32
    /// The VMs' MTU, set on the VXLAN device.
    public var mtu: UInt32
    /// Encapsulation bytes on the underlay (50 over IPv4, 70 over IPv6).
    public var overhead: UInt32
    /// EVPN: the VXLAN device goes into the bridge `bridge`, joined to the switch by the veth pair
    /// `port` (the switch's) <-> `bridgePort`; nil for flood and learn (the VXLAN device is the port).
    public var evpn: EVPNPlumbing?

    public struct EVPNPlumbing: Sendable, Equatable {
        public var bridge: String
        public var port: String
        public var bridgePort: String

        public init(bridge: String, port: String, bridgePort: String) {
            self.bridge = bridge
            self.port = port
            self.bridgePort = bridgePort
        }
    }

    public init(name: String, vlan: VLANID, vni: UInt32, local: String, underlay: String, flood: [String], udpPort: UInt16,
                learning: Bool, ageing: UInt32 = 300, mtu: UInt32, overhead: UInt32, evpn: EVPNPlumbing? = nil) {
        self.name = name
        self.vlan = vlan
        self.vni = vni
        self.local = local
        self.underlay = underlay
        self.flood = flood
        self.udpPort = udpPort
        self.learning = learning
        self.ageing = ageing
        self.mtu = mtu
        self.overhead = overhead
        self.evpn = evpn
    }
}

extension SwitchRuntime {
    /// Creates the segment's VXLAN device over its underlay (MTU checked against the underlay's),
    /// fills its flood list and attaches it as an external port that carries `vlan` untagged. On any
    /// failure a device created here is deleted again.
    ///
    /// With `isRestore` (daemon restart) an existing VXLAN device of that name and VNI is adopted as
    /// it is (remote MACs it learned, or a control plane installed, stay); its flood list is completed.
    @discardableResult
    public func addSegment(_ s: SegmentDevice, isRestore: Bool = false) async throws(SwitchError) -> PortID {
        let ifname = try validName(s.name)
        guard let underlay = try link(s.underlay) else {
            throw SwitchError(.notFound, "segment \(s.name): underlay device \(s.underlay) does not exist")
        }
        if underlay.mtu < s.mtu + s.overhead {
            throw SwitchError(.invalidArgument, "segment \(s.name): underlay \(s.underlay) has MTU \(underlay.mtu), which cannot carry "
                + "the VMs' MTU \(s.mtu) plus \(s.overhead) bytes of VXLAN encapsulation; raise \(s.underlay)'s MTU to at least "
                + "\(s.mtu + s.overhead), or give the segment mtu=\(underlay.mtu > s.overhead + 68 ? underlay.mtu - s.overhead : 68) "
                + "and its VMs' NICs the same MTU")
        }
        if let evpn = s.evpn { return try await addEVPNSegment(s, evpn, underlay: underlay, isRestore: isRestore) }
        var created = false
        if try link(s.name) != nil {
            let state: VXLANState?
            do { state = try devices.vxlanState(named: s.name) } catch { throw SwitchError("cannot query \(s.name)", cause: error) }
            guard isRestore, let state, state.vni == s.vni else {
                throw SwitchError(.exists, "cannot create VXLAN device \(s.name): a network device with that name already exists")
            }
        } else {
            do {
                try devices.createVXLAN(VXLANParameters(name: ifname, vni: s.vni, local: s.local, underlayIndex: underlay.index,
                                                        udpPort: s.udpPort, learning: s.learning, ageing: s.ageing, mtu: s.mtu))
            } catch {
                throw SwitchError("segment \(s.name): cannot create its VXLAN device (VNI \(s.vni) over \(s.underlay))", cause: error)
            }
            created = true
        }
        do throws(SwitchError) {
            guard let device = try link(s.name) else { throw SwitchError(.notFound, "VXLAN device \(s.name) vanished") }
            for remote in s.flood {
                do { try devices.appendFloodEntry(on: device, remote: remote) } catch {
                    throw SwitchError("segment \(s.name): cannot add VTEP \(remote) to the flood list", cause: error)
                }
            }
            return try await addExternalPort(device: s.name, properties: [.vlan(.access(s.vlan))])
        } catch {
            if created { try? devices.deleteLink(s.name) }
            throw error
        }
    }

    /// The EVPN shape: VXLAN device (learning off) and a veth end in a Linux bridge, where FRR's zebra
    /// learns the VMs' MACs (the bridge learns them on the veth) and installs remote MACs and flood
    /// entries; the other veth end is the switch's port, carrying the VLAN untagged. On restore, a
    /// complete set is adopted as it is; anything partial is removed and made again.
    private func addEVPNSegment(_ s: SegmentDevice, _ e: SegmentDevice.EVPNPlumbing, underlay: LinkInfo,
                                isRestore: Bool) async throws(SwitchError) -> PortID {
        let names = [s.name, e.bridge, e.port]
        var present: [String] = []
        for n in names where try link(n) != nil { present.append(n) }
        let vxlanMatches: Bool
        do { vxlanMatches = try devices.vxlanState(named: s.name)?.vni == s.vni } catch { throw SwitchError("cannot query \(s.name)", cause: error) }
        if !present.isEmpty {
            guard isRestore else {
                throw SwitchError(.exists, "cannot create segment \(s.name): network device \(present.joined(separator: ", ")) already exists")
            }
            if present.count < names.count || !vxlanMatches {
                for n in present { try? devices.deleteLink(n) }
                present = []
            }
        }
        let created = present.isEmpty
        if created {
            do {
                try devices.createVXLAN(VXLANParameters(name: try validName(s.name), vni: s.vni, local: s.local, underlayIndex: underlay.index,
                                                        udpPort: s.udpPort, learning: false, ageing: s.ageing, mtu: s.mtu))
                try devices.createBridge(try validName(e.bridge), mtu: s.mtu)
                try devices.createVethPair(try validName(e.port), try validName(e.bridgePort), mtu: s.mtu)
                try devices.attach(s.name, toBridge: e.bridge)
                try devices.attach(e.bridgePort, toBridge: e.bridge)
                try devices.bringUp(e.bridge)
            } catch {
                for n in names { try? devices.deleteLink(n) }
                throw SwitchError("segment \(s.name): cannot create its VXLAN device, bridge and veth pair (VNI \(s.vni) over \(s.underlay))", cause: error)
            }
        }
        // MAC+IP: the VMs' known addresses become neighbour entries on the bridge (zebra advertises
        // them; remote ones answer ARP/ND locally). Also for an adopted bridge made before this existed.
        do { try devices.prepareNeighbours(bridge: e.bridge, vxlan: s.name) } catch {
            if created { for n in names { try? devices.deleteLink(n) } }
            throw SwitchError("segment \(s.name): cannot enable IP neighbours on \(e.bridge)", cause: error)
        }
        do throws(SwitchError) {
            return try await addExternalPort(device: e.port, properties: [.vlan(.access(s.vlan))])
        } catch {
            if created { for n in names { try? devices.deleteLink(n) } }
            throw error
        }
    }

    /// EVPN: makes the bridge forget `mac` on its port towards the switch at once (a VM that stopped
    /// or left), so zebra withdraws its type-2 route now rather than when the bridge's entry ages out.
    public func forgetLocalMAC(_ mac: MACAddress, bridgePort: String) -> Bool {
        (try? devices.forgetBridgeEntry(port: bridgePort, mac: mac)) ?? false
    }

    /// EVPN MAC+IP: tells the bridge (so zebra) that `ip` belongs to `mac`.
    public func setNeighbour(bridge: String, ip: IPPrefix, mac: MACAddress) throws(SwitchError) {
        do { try devices.setNeighbour(bridge: bridge, ip: ip, mac: mac) } catch {
            throw SwitchError("cannot add neighbour \(ip) -> \(mac) on \(bridge)", cause: error)
        }
    }

    /// EVPN MAC+IP: the addresses set on the bridge by hand (by tapswitch: an earlier run's entries).
    public func manualNeighbours(bridge: String) -> [IPPrefix] {
        (try? devices.manualNeighbours(bridge: bridge)) ?? []
    }

    /// EVPN MAC+IP: withdraws `ip` from the bridge; false when it was not there.
    public func deleteNeighbour(bridge: String, ip: IPPrefix) -> Bool {
        (try? devices.deleteNeighbour(bridge: bridge, ip: ip)) ?? false
    }
}
