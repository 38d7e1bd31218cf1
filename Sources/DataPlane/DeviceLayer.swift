import LinuxNet
import SwitchCore

/// Everything ``SwitchRuntime`` needs from the host's network devices: persistent TAPs, link
/// queries and configuration, the ``PortDriver`` of each port, and link notifications.
///
/// ``LinuxDeviceLayer`` (netlink, TUN ioctls, AF_PACKET) is the default. Tests inject an in-memory
/// implementation (the `FakeDevices` test-support target) to run the real runtime without root.
///
/// ## Concurrency model
/// The control-plane methods (everything but ``makeLinkEvents()`` and ``makeLoopLinkQuery()``'s
/// results) are called from control tasks, possibly concurrently, and may block for a netlink round
/// trip; never from the packet loop. The link-event source and the loop's link query are created
/// once and then used only on the packet-loop queue, so the loop never waits on a lock or a socket
/// the control plane uses.
public protocol DeviceLayer: AnyObject, Sendable {
    /// The link called `name` in tapswitch's namespace, nil if there is none.
    func link(named name: String) throws -> LinkInfo?

    /// Whether `name` is a TUN/TAP device (one tapswitch may adopt on restore).
    func isTAP(_ name: String) -> Bool

    /// Creates the persistent TAP `name`, attachable by `owner`/`group` (nil: root only), admin-down,
    /// with no fd left attached. Throws if any link of that name exists. A `marker` becomes the
    /// TAP's alias before it is made persistent, so no persistent TAP exists without it.
    func createTAP(_ name: InterfaceName, owner: UInt32?, group: UInt32?, marker: String?) throws

    /// Replaces the marker (interface alias) of the TAP `name`.
    func setMarker(_ name: String, _ marker: String) throws

    /// Every link in tapswitch's namespace, with its alias (to find the TAPs tapswitch marked).
    func links() throws -> [LinkInfo]

    /// Who may attach to the TAP `name` (nil: unrestricted), as the kernel shows it.
    func tapOwnership(_ name: String) -> (owner: UInt32?, group: UInt32?)

    /// Readies a VM's TAP: host stack off (no IPv6 autoconf, no addresses), MAC (nil leaves it),
    /// MTU, admin-up.
    func configureVMTAP(_ name: String, mac: MACAddress?, mtu: UInt32) throws

    /// Sets an existing device (an uplink) admin-up.
    func bringUp(_ name: String) throws

    /// Deletes the link `name` (a TAP even while QEMU holds it).
    func deleteLink(_ name: String) throws

    /// Opens the driver of a VM's TAP or an uplink.
    func openDriver(on link: LinkInfo, role: PacketPortRole, buffers: BatchBuffers) throws -> any PortDriver

    /// Creates an internal port's TAP with tapswitch holding its only queue (the device lives
    /// exactly as long as the returned driver), offloads on, host stack off, `mac`/`mtu` set, up;
    /// then moves it into the network namespace at `netnsPath`, if given (where it arrives down).
    /// On any failure nothing is left: no device, no fd.
    func createInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, netnsPath: String?,
                            buffers: BatchBuffers) throws -> InternalPortDevice

    /// The internal port `name` (in tapswitch's namespace) whose queue the previous daemon process
    /// handed over (``SocketHandOver``): the device still exists, with its host configuration; it
    /// gets `mac`/`mtu` and is set up. Nil when no queue of that name was handed over. Optional;
    /// the default has none.
    func adoptInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, buffers: BatchBuffers) throws -> InternalPortDevice?

    /// Opens what the drivers of the existing VM TAPs `names` will need, all at once, before they are
    /// plugged in one by one (a restart re-adopting its ports). Optional; the default does nothing.
    func prepareReceive(forTAPs names: [String])

    /// The link notifications of tapswitch's namespace, for the packet loop.
    func makeLinkEvents() throws -> any LinkEventSource

    /// Creates a segment's VXLAN device (``VXLANParameters``) with the host stack off (no IPv6
    /// autoconf: nothing of the host's leaks into the segment), admin-down.
    func createVXLAN(_ p: VXLANParameters) throws

    /// The VXLAN settings of `name`; nil when it does not exist or is not a VXLAN device.
    func vxlanState(named name: String) throws -> VXLANState?

    /// Adds `remote` to the flood list (all-zero FDB entry) of the VXLAN device `link`.
    func appendFloodEntry(on link: LinkInfo, remote: String) throws

    /// Creates a Linux bridge, admin-down, host stack off (an EVPN segment's bridge, where FRR's zebra
    /// reads local MACs and installs remote ones).
    func createBridge(_ name: InterfaceName, mtu: UInt32) throws

    /// Creates a veth pair `a` <-> `b` with MTU `mtu`, host stack off on both, admin-down.
    func createVethPair(_ a: InterfaceName, _ b: InterfaceName, mtu: UInt32) throws

    /// Makes `name` a port of bridge `bridge` and brings it up.
    func attach(_ name: String, toBridge bridge: String) throws

    /// Deletes what the bridge learned of `mac` on port `port`; false when it knew nothing.
    func forgetBridgeEntry(port: String, mac: MACAddress) throws -> Bool

    /// An EVPN segment's bridge made ready for IP neighbours: IPv6 on (still without addresses) on
    /// `bridge`, ARP/ND suppression on its VXLAN port `vxlan`.
    func prepareNeighbours(bridge: String, vxlan: String) throws

    /// Adds or replaces the neighbour entry `ip` (a host address) -> `mac` on `bridge` (zebra
    /// advertises it as a MAC+IP route).
    func setNeighbour(bridge: String, ip: IPPrefix, mac: MACAddress) throws

    /// Deletes the neighbour entry for `ip` on `bridge`; false when there was none.
    func deleteNeighbour(bridge: String, ip: IPPrefix) throws -> Bool

    /// The unicast neighbour entries set by hand on `bridge` (NOARP or PERMANENT, not `extern_learn`).
    func manualNeighbours(bridge: String) throws -> [IPPrefix]

    /// Link queries for the packet loop alone (its own socket: it never waits behind the control plane).
    func makeLoopLinkQuery() throws -> any LinkQuerying

    /// Loads the XDP fast path for these devices (nil: they have none, as in-memory devices).
    /// Throws why it cannot be loaded (object missing, no privilege, kernel refused).
    func makeFastPath(maxPorts: Int, maxFlows: Int) throws -> XDPFastPath?
}

extension DeviceLayer {
    public func makeFastPath(maxPorts: Int, maxFlows: Int) throws -> XDPFastPath? { nil }
}

extension DeviceLayer {
    // Device layers without VXLAN (test doubles) refuse segments.
    public func createVXLAN(_ p: VXLANParameters) throws {
        throw SwitchError(.invalidState, "this device layer cannot create VXLAN devices")
    }

    public func vxlanState(named name: String) throws -> VXLANState? { nil }

    public func appendFloodEntry(on link: LinkInfo, remote: String) throws {
        throw SwitchError(.invalidState, "this device layer has no VXLAN flood lists")
    }

    public func createBridge(_ name: InterfaceName, mtu: UInt32) throws {
        throw SwitchError(.invalidState, "this device layer cannot create bridges")
    }

    public func createVethPair(_ a: InterfaceName, _ b: InterfaceName, mtu: UInt32) throws {
        throw SwitchError(.invalidState, "this device layer cannot create veth pairs")
    }

    public func attach(_ name: String, toBridge bridge: String) throws {
        throw SwitchError(.invalidState, "this device layer has no bridges")
    }

    public func forgetBridgeEntry(port: String, mac: MACAddress) throws -> Bool { false }

    public func prepareNeighbours(bridge: String, vxlan: String) throws {}
    public func setNeighbour(bridge: String, ip: IPPrefix, mac: MACAddress) throws {}
    public func deleteNeighbour(bridge: String, ip: IPPrefix) throws -> Bool { false }
    public func manualNeighbours(bridge: String) throws -> [IPPrefix] { [] }

    public func prepareReceive(forTAPs names: [String]) {}

    public func adoptInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, buffers: BatchBuffers) throws -> InternalPortDevice? { nil }
}

/// What a device opened with ``DeviceLayer/openDriver(on:role:buffers:)`` is to the switch.
public enum PacketPortRole: Sendable, Equatable {
    /// A VM's TAP: a GSO frame its reader cannot take is resent through a path that segments it, and
    /// UDP superframes from the guest are dropped at the socket (see ``PacketRingDriver``).
    case vmTAP
    /// An uplink: joined in promiscuous mode (it must see frames for every VM's MAC).
    case uplink
}

/// An internal port's device as ``DeviceLayer/createInternalPort(_:mac:mtu:netnsPath:buffers:)`` made it.
public struct InternalPortDevice {
    public var driver: any PortDriver
    /// Its interface index in tapswitch's namespace when it was created.
    public var index: Int32

    public init(driver: any PortDriver, index: Int32) {
        self.driver = driver
        self.index = index
    }
}

/// Link notifications for the packet loop (``LinkMonitor`` on Linux).
///
/// ## Concurrency model
/// Used only on the packet-loop queue.
public protocol LinkEventSource: AnyObject {
    /// Readable while notifications are pending (level-triggered).
    var readiness: PollHandle { get }
    /// Reports every pending notification without blocking.
    func drain(_ handle: (LinkEvent) -> Void) throws
}

/// Synchronous link queries (``RouteNetlink`` on Linux).
public protocol LinkQuerying: AnyObject {
    func link(named name: String) throws -> LinkInfo?
    func link(index: Int32) throws -> LinkInfo?
}

extension LinkMonitor: LinkEventSource {
    public var readiness: PollHandle { pollHandle }
}

extension RouteNetlink: LinkQuerying {}

/// The host's devices through LinuxNet: netlink (libnl-route), TUN ioctls and AF_PACKET.
///
/// ## Concurrency model
/// `Sendable`: its one netlink socket serialises requests (``RouteNetlink``'s lock); the loop gets
/// its own socket from ``makeLoopLinkQuery()``.
public final class LinuxDeviceLayer: DeviceLayer {
    private let net: RouteNetlink
    /// Receive sockets handed over from the previous daemon process, and kept for the next.
    private let handOver: SocketHandOver

    public init(handOver: SocketHandOver = .process) throws {
        net = try RouteNetlink()
        self.handOver = handOver
    }

    public func link(named name: String) throws -> LinkInfo? { try net.link(named: name) }

    public func isTAP(_ name: String) -> Bool { TapDevice.isTap(name) }

    public func createTAP(_ name: InterfaceName, owner: UInt32?, group: UInt32?, marker: String?) throws {
        try TapDevice.createPersistent(name: name, owner: owner, group: group) { [net] in
            if let marker { try net.setAlias(name.value, marker) }
        }
    }

    public func setMarker(_ name: String, _ marker: String) throws { try net.setAlias(name, marker) }

    public func links() throws -> [LinkInfo] { try net.links() }

    public func tapOwnership(_ name: String) -> (owner: UInt32?, group: UInt32?) {
        let a = TapDevice.attributes(name)
        return (a?.owner, a?.group)
    }

    public func configureVMTAP(_ name: String, mac: MACAddress?, mtu: UInt32) throws {
        // The host's own stack stays off the VM's segment (no IPv6 autoconf, no addresses).
        try net.disableHostStack(name)
        try net.setLink(name, mac: mac?.bytes, mtu: mtu, up: true)
    }

    public func bringUp(_ name: String) throws { try net.setLink(name, up: true) }

    public func deleteLink(_ name: String) throws { try net.deleteLink(name) }

    public func openDriver(on link: LinkInfo, role: PacketPortRole, buffers: BatchBuffers) throws -> any PortDriver {
        try PacketRingDriver(link: link, role: role, buffers: buffers, handOver: handOver)
    }

    public func prepareReceive(forTAPs names: [String]) {
        // Only in the daemon, which closes what no port adopted (``SocketHandOver/closeUnadopted()``).
        guard handOver.isEnabled else { return }
        let links = names.compactMap { try? net.link(named: $0) }
        PacketRingDriver.prepareReceiveSockets(for: links, handOver: handOver)
    }

    public func adoptInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, buffers: BatchBuffers) throws -> InternalPortDevice? {
        guard handOver.isEnabled, let info = try net.link(named: name.value),
              let fd = handOver.adopt(name: SocketHandOver.socketName(TunQueueDriver.handOverKind, index: info.index, device: name.value))
        else { return nil }
        let queue = try TunQueue(adopting: fd, name: name.value)
        // The recorded settings, as at creation (the host stack's addresses and routes stay).
        try net.setLink(name.value, mac: mac.bytes, mtu: mtu, up: true)
        return InternalPortDevice(driver: TunQueueDriver(queue: queue, buffers: buffers, handOver: handOver, index: info.index), index: info.index)
    }

    public func createInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, netnsPath: String?,
                                   buffers: BatchBuffers) throws -> InternalPortDevice {
        let queue: TunQueue
        let index: Int32
        do {
            // One TUNSETIFF creates the TAP with our queue attached: not persistent, the host
            // interface lives exactly as long as the queue. (Creating it persistent, closing and
            // attaching again raced with any fork in another thread: the child's copy of the first
            // fd kept the single queue busy, and the attach failed with EBUSY.) The caller has
            // checked that the name is free. From here the queue owns the fd: any throw closes it.
            queue = try TunQueue(attachingTo: name, vnetHeader: true, nonBlocking: true, createIfMissing: true)
            // Let the host stack hand us TSO/GSO superframes and partial checksums.
            try queue.setOffload(csum: true, tso4: true, tso6: true)
            try net.disableHostStack(name.value)
            try net.setLink(name.value, mac: mac.bytes, mtu: mtu, up: true)
            guard let info = try net.link(named: name.value) else {
                throw SwitchError(.notFound, "\(name.value) vanished while being created")
            }
            index = info.index
        } catch {
            // The queue (if any) is closed by now, which destroyed the TAP; make sure.
            try? net.deleteLink(name.value)
            throw error
        }
        if let netnsPath {
            // A failure here closes the queue, which destroys the TAP.
            do { try net.moveLink(name.value, toNetnsAt: netnsPath) } catch {
                throw SwitchError("cannot move it into network namespace \(netnsPath)", cause: error)
            }
        }
        // Kept for the next daemon process only in tapswitch's namespace (a port in another one is
        // created again on restart).
        return InternalPortDevice(driver: TunQueueDriver(queue: queue, buffers: buffers, handOver: netnsPath == nil ? handOver : nil,
                                                         index: index), index: index)
    }

    public func makeLinkEvents() throws -> any LinkEventSource { try LinkMonitor() }

    public func createVXLAN(_ p: VXLANParameters) throws {
        try net.createVXLAN(p)
        do {
            try net.disableHostStack(p.name.value)
        } catch {
            try? net.deleteLink(p.name.value)
            throw error
        }
    }

    public func vxlanState(named name: String) throws -> VXLANState? { try net.vxlanState(named: name) }

    public func appendFloodEntry(on link: LinkInfo, remote: String) throws {
        try net.appendFloodEntry(deviceIndex: link.index, device: link.name, remote: remote)
    }

    public func createBridge(_ name: InterfaceName, mtu: UInt32) throws {
        try net.createBridge(name, mtu: mtu)
        do { try net.disableHostStack(name.value) } catch {
            try? net.deleteLink(name.value)
            throw error
        }
    }

    public func createVethPair(_ a: InterfaceName, _ b: InterfaceName, mtu: UInt32) throws {
        try net.createVethPair(a.value, b.value)
        do {
            for end in [a.value, b.value] {
                try net.disableHostStack(end)
                try net.setLink(end, mtu: mtu)
            }
        } catch {
            try? net.deleteLink(a.value)
            throw error
        }
    }

    public func attach(_ name: String, toBridge bridge: String) throws {
        guard let master = try net.link(named: bridge) else {
            throw SwitchError(.notFound, "bridge \(bridge) does not exist")
        }
        try net.setMaster(name, masterIndex: master.index)
        try net.setLink(name, up: true)
    }

    public func forgetBridgeEntry(port: String, mac: MACAddress) throws -> Bool {
        guard let link = try net.link(named: port) else { return false }
        return try net.deleteBridgeFDBEntry(portIndex: link.index, device: port, mac: mac.bytes)
    }

    public func prepareNeighbours(bridge: String, vxlan: String) throws {
        try net.enableIPv6WithoutAddresses(bridge)
        try net.setNeighbourSuppression(vxlan, on: true)
    }

    public func setNeighbour(bridge: String, ip: IPPrefix, mac: MACAddress) throws {
        guard let link = try net.link(named: bridge) else { throw SwitchError(.notFound, "bridge \(bridge) does not exist") }
        try net.setNeighbour(deviceIndex: link.index, device: bridge, ip: Self.bytes(ip), mac: mac.bytes)
    }

    public func deleteNeighbour(bridge: String, ip: IPPrefix) throws -> Bool {
        guard let link = try net.link(named: bridge) else { return false }
        return try net.deleteNeighbour(deviceIndex: link.index, device: bridge, ip: Self.bytes(ip))
    }

    public func manualNeighbours(bridge: String) throws -> [IPPrefix] {
        guard let link = try net.link(named: bridge) else { return [] }
        return try net.manualNeighbours(deviceIndex: link.index).map { b in
            func word(_ range: Range<Int>) -> UInt64 { b[range].reduce(0) { $0 << 8 | UInt64($1) } }
            return b.count == 4 ? IPPrefix(ipv4: UInt32(word(0..<4))) : IPPrefix(ipv6: word(0..<8), word(8..<16))
        }
    }

    /// A host address's bytes in network order: 4 for IPv4, 16 for IPv6.
    static func bytes(_ ip: IPPrefix) -> [UInt8] {
        func be(_ v: UInt64, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: v >> UInt64(8 * (count - 1 - $0))) } }
        return ip.family == .ipv4 ? be(ip.low, 4) : be(ip.high, 8) + be(ip.low, 8)
    }

    public func makeLoopLinkQuery() throws -> any LinkQuerying { try RouteNetlink() }

    public func makeFastPath(maxPorts: Int, maxFlows: Int) throws -> XDPFastPath? {
        guard let path = XDPFastPath.findObject() else {
            throw SwitchError(.notFound, "\(XDPFastPath.objectName) not found (run scripts/build-bpf, or set TAPSWITCH_BPF_OBJECT)")
        }
        return try XDPFastPath(objectPath: path, maxPorts: maxPorts, maxFlows: maxFlows)
    }
}
