// In-memory host devices: the real `SwitchRuntime` (and everything above it) without root, TAPs,
// sockets or netlink.
//
// `FakeDeviceLayer` implements `DataPlane.DeviceLayer`. Give it to the runtime and drive the
// "host" from the test; the switch, its lifecycle, extensions and packet loop are the real ones:
//
// ```swift
// let devices = FakeDeviceLayer()
// let rt = try SwitchRuntime(configuration: config, devices: devices)
// try rt.start()
// try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "tap-a", mac: macA))  // creates a fake TAP
// devices.attach("tap-a")                   // QEMU attaches: carrier up, link event -> NIC_CONNECT
// devices.inject(frame, from: "tap-a")      // the guest sends a frame (into the port's driver)
// devices.delivered(to: "tap-b")            // frames the switch sent to tap-b (what the guest reads)
// devices.detach("tap-a")                   // QEMU exits: carrier down -> NIC_DISCONNECT
// devices.deleteByHand("tap-a")             // `ip link del` under the switch -> the port is lost
// await rt.shutdown()
// ```
//
// Host side (what a test or a device-free daemon arranges):
// - `addUplink(_:mac:mtu:)`: an existing netdev for `addExternalPort` (carrier up).
// - `attach(_:announce:)` / `detach(_:)` / `setCarrier(_:_:announce:)`: carrier of a device.
//   `announce: false` changes carrier without the link notification (the kernel's linkwatch
//   reports it up to a second late): the runtime then learns it when frames arrive.
// - `inject(_:vnetHeader:from:)`: a frame into the device's driver (false if no driver is open).
// - `delivered(to:)` / `takeDelivered(from:)`: frames the switch transmitted to a device.
//   While a TAP has no carrier (no QEMU attached) transmits fail as a full queue, as with a real
//   TAP under qdisc bypass (`ENOBUFS`).
// - `deleteByHand(_:)`: removes a device under the switch (link notification + driver failure).
// - `failNext(_:on:)`: the next call of that operation on that device throws ``FakeDeviceError``.
//
// Inspection: `device(_:)` (a ``FakeDevice`` snapshot: kind, MAC, MTU, up, carrier, owner, group,
// netns, whether a driver is open), `deviceNames`, `openDriverCount`.
//
// Semantics follow the kernel where the runtime depends on them: creating an existing name fails
// (`EEXIST`); an internal port's TAP exists exactly as long as its driver is open; a device moved
// into another network namespace is invisible to `link(named:)`; deleting a TAP works while a
// driver is open (the driver then fails with `ENETDOWN`).
//
// ## Concurrency model
// Every type here is `Sendable`: device state is behind one `Mutex`, each device's frames behind
// its own. Drivers run on the runtime's packet-loop queue; the test calls the host-side methods
// from any thread. Readiness is a real `EventFD`, so the runtime's epoll loop serves fake ports
// exactly as real ones.

import DataPlane
import LinuxNet
import SwitchCore
import Locking

/// One frame as a fake device carries it.
public struct FakeFrame: Sendable, Equatable {
    public var bytes: [UInt8]
    public var vnetHeader: VirtioNetHeader?

    public init(_ bytes: [UInt8], vnetHeader: VirtioNetHeader? = nil) {
        self.bytes = bytes
        self.vnetHeader = vnetHeader
    }
}

/// A snapshot of one fake device.
public struct FakeDevice: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A persistent TAP (a VM NIC's).
        case tap
        /// An internal port's TAP (lives as long as its driver).
        case internalPort
        /// An existing netdev (an uplink).
        case uplink
    }

    public var name: String
    public var index: Int32
    public var kind: Kind
    public var mac: [UInt8]
    public var mtu: UInt32
    public var isUp: Bool
    public var hasCarrier: Bool
    public var owner: UInt32?
    public var group: UInt32?
    /// The network namespace path an internal port was moved into, nil for tapswitch's own.
    public var netns: String?
    public var driverOpen: Bool
    /// The interface alias (tapswitch's marker on the TAPs it creates).
    public var alias: String? = nil

    var linkInfo: LinkInfo {
        LinkInfo(index: index, name: name, mtu: mtu, mac: mac, isUp: isUp, hasCarrier: hasCarrier,
                 kind: kind == .uplink ? "veth" : "tun", isOperUp: isUp && hasCarrier, alias: alias)
    }
}

/// A failure injected with ``FakeDeviceLayer/failNext(_:on:)``, or a refused request.
public struct FakeDeviceError: Error, CustomStringConvertible, Sendable, Equatable {
    public var operation: FakeDeviceLayer.Operation
    public var device: String
    public var reason: String

    public var description: String { "\(operation) on '\(device)': \(reason)" }
}

public final class FakeDeviceLayer: DeviceLayer {
    /// The device operations a test can make fail.
    public enum Operation: String, Sendable, Equatable, CustomStringConvertible {
        case createTAP, configureVMTAP, bringUp, deleteLink, openDriver, createInternalPort
        public var description: String { rawValue }
    }

    private struct State {
        var devices: [String: FakeDevice] = [:]
        var wires: [String: FakeWire] = [:]
        var failures: [String: Set<Operation>] = [:]
        var nextIndex: Int32 = 1000
    }

    private let state = Locked(State())
    private let events = FakeLinkEvents()

    public init() {}

    // MARK: - Host side

    /// Adds an existing netdev (an uplink) with carrier up, admin-down.
    public func addUplink(_ name: String, mac: [UInt8], mtu: UInt32 = 1500) {
        state.withLock { s in
            s.nextIndex += 1
            s.devices[name] = FakeDevice(name: name, index: s.nextIndex, kind: .uplink, mac: mac, mtu: mtu, isUp: false,
                                         hasCarrier: true, netns: nil, driverOpen: false)
            s.wires[name] = FakeWire(alwaysAttached: true)
        }
    }

    /// QEMU attaches to `name`: carrier up.
    public func attach(_ name: String, announce: Bool = true) { setCarrier(name, true, announce: announce) }

    /// QEMU lets go of `name`: carrier down.
    public func detach(_ name: String) { setCarrier(name, false) }

    /// Sets `name`'s carrier; with `announce`, the link notification follows at once.
    public func setCarrier(_ name: String, _ up: Bool, announce: Bool = true) {
        let info: LinkInfo? = state.withLock { s in
            guard var d = s.devices[name] else { return nil }
            d.hasCarrier = up
            s.devices[name] = d
            s.wires[name]?.setAttached(up)
            return d.linkInfo
        }
        if announce, let info { events.post(.changed(info)) }
    }

    /// The guest (or the host stack behind an internal port, or the uplink's wire) sends `frame`.
    /// Returns false if no driver is open on `name`.
    @discardableResult
    public func inject(_ frame: [UInt8], vnetHeader: VirtioNetHeader? = nil, from name: String) -> Bool {
        guard let wire = state.withLock({ s in s.devices[name]?.driverOpen == true ? s.wires[name] : nil }) else { return false }
        return wire.inject(FakeFrame(frame, vnetHeader: vnetHeader))
    }

    /// Every frame the switch transmitted to `name` so far.
    public func delivered(to name: String) -> [FakeFrame] {
        state.withLock { $0.wires[name] }?.delivered ?? []
    }

    /// The frames transmitted to `name` since the last take.
    public func takeDelivered(from name: String) -> [FakeFrame] {
        state.withLock { $0.wires[name] }?.takeDelivered() ?? []
    }

    /// Deletes `name` under the switch, as `ip link del` would.
    public func deleteByHand(_ name: String) {
        try? remove(name, operation: .deleteLink, injectable: false)
    }

    /// Makes the next `operation` on `name` throw.
    public func failNext(_ operation: Operation, on name: String) {
        state.withLock { _ = $0.failures[name, default: []].insert(operation) }
    }

    // MARK: - Inspection

    public func device(_ name: String) -> FakeDevice? { state.withLock { $0.devices[name] } }

    public var deviceNames: [String] { state.withLock { $0.devices.keys.sorted() } }

    /// Drivers currently open (the fake counterpart of fds the runtime holds).
    public var openDriverCount: Int { state.withLock { $0.devices.values.filter(\.driverOpen).count } }

    // MARK: - DeviceLayer

    public func link(named name: String) throws -> LinkInfo? {
        state.withLock { s in
            guard let d = s.devices[name], d.netns == nil else { return nil }
            return d.linkInfo
        }
    }

    public func isTAP(_ name: String) -> Bool {
        state.withLock { s in s.devices[name].map { $0.kind != .uplink } ?? false }
    }

    public func createTAP(_ name: InterfaceName, owner: UInt32?, group: UInt32?, marker: String?) throws {
        try state.withLock { s throws(FakeDeviceError) in
            try Self.checkFailure(&s, .createTAP, name.value)
            guard s.devices[name.value] == nil else {
                throw FakeDeviceError(operation: .createTAP, device: name.value, reason: "a link with this name already exists (EEXIST)")
            }
            s.nextIndex += 1
            s.devices[name.value] = FakeDevice(name: name.value, index: s.nextIndex, kind: .tap, mac: Self.randomMAC(s.nextIndex),
                                               mtu: 1500, isUp: false, hasCarrier: false, owner: owner, group: group,
                                               netns: nil, driverOpen: false, alias: marker)
            s.wires[name.value] = FakeWire(alwaysAttached: false)
        }
    }

    public func setMarker(_ name: String, _ marker: String) throws {
        _ = try change(name, .configureVMTAP) { $0.alias = marker.isEmpty ? nil : marker }
    }

    public func links() throws -> [LinkInfo] {
        state.withLock { s in s.devices.values.filter { $0.netns == nil }.map(\.linkInfo) }
    }

    public func tapOwnership(_ name: String) -> (owner: UInt32?, group: UInt32?) {
        state.withLock { s in (s.devices[name]?.owner, s.devices[name]?.group) }
    }

    public func configureVMTAP(_ name: String, mac: MACAddress?, mtu: UInt32) throws {
        let info = try change(name, .configureVMTAP) { d in
            if let mac { d.mac = mac.bytes }
            d.mtu = mtu
            d.isUp = true
        }
        events.post(.changed(info))
    }

    public func bringUp(_ name: String) throws {
        let info = try change(name, .bringUp) { $0.isUp = true }
        events.post(.changed(info))
    }

    public func deleteLink(_ name: String) throws {
        try remove(name, operation: .deleteLink, injectable: true)
    }

    public func openDriver(on link: LinkInfo, role: PacketPortRole, buffers: BatchBuffers) throws -> any PortDriver {
        let wire = try state.withLock { s throws(FakeDeviceError) -> FakeWire in
            try Self.checkFailure(&s, .openDriver, link.name)
            guard var d = s.devices[link.name], d.index == link.index, let wire = s.wires[link.name] else {
                throw FakeDeviceError(operation: .openDriver, device: link.name, reason: "no such device (ENODEV)")
            }
            guard !d.driverOpen else {
                throw FakeDeviceError(operation: .openDriver, device: link.name, reason: "a driver is already open")
            }
            d.driverOpen = true
            s.devices[link.name] = d
            return wire
        }
        return FakePortDriver(name: link.name, wire: wire, followsCarrier: true, layer: self)
    }

    public func createInternalPort(_ name: InterfaceName, mac: MACAddress, mtu: UInt32, netnsPath: String?,
                                   buffers: BatchBuffers) throws -> InternalPortDevice {
        let (wire, index) = try state.withLock { s throws(FakeDeviceError) -> (FakeWire, Int32) in
            try Self.checkFailure(&s, .createInternalPort, name.value)
            guard s.devices[name.value] == nil else {
                throw FakeDeviceError(operation: .createInternalPort, device: name.value, reason: "a link with this name already exists (EEXIST)")
            }
            s.nextIndex += 1
            // Moved into a namespace, it arrives down there.
            s.devices[name.value] = FakeDevice(name: name.value, index: s.nextIndex, kind: .internalPort, mac: mac.bytes, mtu: mtu,
                                               isUp: netnsPath == nil, hasCarrier: true, netns: netnsPath, driverOpen: true)
            let wire = FakeWire(alwaysAttached: true)
            s.wires[name.value] = wire
            return (wire, s.nextIndex)
        }
        return InternalPortDevice(driver: FakePortDriver(name: name.value, wire: wire, followsCarrier: false, layer: self), index: index)
    }

    public func makeLinkEvents() throws -> any LinkEventSource { events }

    public func makeLoopLinkQuery() throws -> any LinkQuerying { FakeLinkQuery(layer: self) }

    // MARK: - Internals

    /// A driver closed: an internal port's TAP goes with it (it was not persistent).
    func driverClosed(_ name: String, wire: FakeWire) {
        let removed: LinkInfo? = state.withLock { s in
            guard var d = s.devices[name], s.wires[name] === wire else { return nil }
            d.driverOpen = false
            if d.kind == .internalPort {
                s.devices[name] = nil
                s.wires[name] = nil
                return d.netns == nil ? d.linkInfo : nil
            }
            s.devices[name] = d
            return nil
        }
        if let removed { events.post(.removed(index: removed.index, name: removed.name)) }
    }

    func linkInfo(index: Int32) -> LinkInfo? {
        state.withLock { s in s.devices.values.first { $0.index == index && $0.netns == nil }?.linkInfo }
    }

    private func change(_ name: String, _ operation: Operation, _ body: (inout FakeDevice) -> Void) throws -> LinkInfo {
        try state.withLock { s throws(FakeDeviceError) -> LinkInfo in
            try Self.checkFailure(&s, operation, name)
            guard var d = s.devices[name], d.netns == nil else {
                throw FakeDeviceError(operation: operation, device: name, reason: "no such device (ENODEV)")
            }
            body(&d)
            s.devices[name] = d
            return d.linkInfo
        }
    }

    private func remove(_ name: String, operation: Operation, injectable: Bool) throws {
        let (info, wire) = try state.withLock { s throws(FakeDeviceError) -> (LinkInfo, FakeWire?) in
            if injectable { try Self.checkFailure(&s, operation, name) }
            guard let d = s.devices[name], d.netns == nil else {
                throw FakeDeviceError(operation: operation, device: name, reason: "no such device (ENODEV)")
            }
            s.devices[name] = nil
            return (d.linkInfo, s.wires.removeValue(forKey: name))
        }
        wire?.vanish()
        events.post(.removed(index: info.index, name: info.name))
    }

    private static func checkFailure(_ s: inout State, _ operation: Operation, _ name: String) throws(FakeDeviceError) {
        if s.failures[name]?.remove(operation) != nil {
            throw FakeDeviceError(operation: operation, device: name, reason: "injected failure")
        }
    }

    private static func randomMAC(_ index: Int32) -> [UInt8] {
        [0xfe, 0x54, 0x00, 0x00, UInt8(truncatingIfNeeded: index >> 8), UInt8(truncatingIfNeeded: index)]
    }
}

/// The frames of one fake device, between the test and the port's driver.
final class FakeWire: Sendable {
    private struct State {
        var inbox: [FakeFrame] = []
        var outbox: [FakeFrame] = []
        var taken = 0
        var attached: Bool
        var gone = false
    }

    let readiness: EventFD
    private let alwaysAttached: Bool
    private let state: Locked<State>

    init(alwaysAttached: Bool) {
        // An eventfd cannot fail short of fd exhaustion, where a test cannot go on anyway.
        readiness = try! EventFD()
        self.alwaysAttached = alwaysAttached
        state = Locked(State(attached: alwaysAttached))
    }

    func setAttached(_ attached: Bool) {
        state.withLock { $0.attached = alwaysAttached || attached }
    }

    func inject(_ frame: FakeFrame) -> Bool {
        state.withLock { s in
            guard !s.gone else { return false }
            s.inbox.append(frame)
            readiness.signal()
            return true
        }
    }

    /// Up to `max` injected frames, and whether the device vanished. Clears the readiness once the
    /// inbox is empty (under the lock, so an injection cannot slip between).
    func take(max: Int) -> (frames: ArraySlice<FakeFrame>, gone: Bool) {
        state.withLock { s in
            if s.gone { return ([], true) }
            let n = Swift.min(max, s.inbox.count)
            let frames = s.inbox.prefix(n)
            s.inbox.removeFirst(n)
            if s.inbox.isEmpty { readiness.drain() }
            return (frames, false)
        }
    }

    /// Accepts frames while someone is attached (a TAP without QEMU refuses them: a full queue).
    func deliver(_ frames: [FakeFrame]) -> Bool {
        state.withLock { s in
            guard s.attached, !s.gone else { return false }
            s.outbox.append(contentsOf: frames)
            return true
        }
    }

    var delivered: [FakeFrame] { state.withLock { $0.outbox } }

    func takeDelivered() -> [FakeFrame] {
        state.withLock { s in
            let new = Array(s.outbox[s.taken...])
            s.taken = s.outbox.count
            return new
        }
    }

    /// The device was deleted: the driver fails at its next receive.
    func vanish() {
        state.withLock { s in
            s.gone = true
            readiness.signal()
        }
    }
}

/// A fake device's driver. Confined to the packet-loop queue like every driver.
final class FakePortDriver: PortDriver {
    let name: String
    let wire: FakeWire
    let followsCarrier: Bool
    private weak var layer: FakeDeviceLayer?
    private var closed = false
    private static let netDown: Int32 = 100  // ENETDOWN, as a real socket reports a deleted device

    init(name: String, wire: FakeWire, followsCarrier: Bool, layer: FakeDeviceLayer) {
        self.name = name
        self.wire = wire
        self.followsCarrier = followsCarrier
        self.layer = layer
    }

    deinit { close() }

    var readiness: PollHandle { wire.readiness.pollHandle }

    func receive(into batch: FrameBatch, max: Int) -> PortReceive {
        let (frames, gone) = wire.take(max: max)
        if gone { return .failed(Self.netDown) }
        for frame in frames { batch.append(frame.bytes, vnetHeader: frame.vnetHeader) }
        return .received(frames.count)
    }

    func transmit(_ batch: FrameBatch, frames: UnsafeBufferPointer<UInt16>) -> PortTransmit {
        let copies = frames.map { FakeFrame(batch.copyBytes(Int($0)), vnetHeader: batch.virtioHeader(Int($0))) }
        if wire.deliver(copies) { return PortTransmit(TransmitResult(sent: frames.count)) }
        return PortTransmit(TransmitResult(sent: 0, failure: .transmitQueueFull))
    }

    func linkChanged(_ info: LinkInfo) {}
    func pendingError() -> Int32? { nil }
    func collectStatistics() {}
    func addDeviceDrops(to counters: inout PortCounters) {}

    func close() {
        guard !closed else { return }
        closed = true
        layer?.driverClosed(name, wire: wire)
    }
}

/// Link notifications of a ``FakeDeviceLayer``: posted from any thread, drained on the loop.
final class FakeLinkEvents: LinkEventSource, Sendable {
    private let ready = try! EventFD()  // see FakeWire.init
    private let pending = Locked<[LinkEvent]>([])

    var readiness: PollHandle { ready.pollHandle }

    func post(_ event: LinkEvent) {
        pending.withLock { p in
            p.append(event)
            ready.signal()
        }
    }

    func drain(_ handle: (LinkEvent) -> Void) throws {
        let events = pending.withLock { p in
            ready.drain()
            defer { p.removeAll() }
            return p
        }
        for event in events { handle(event) }
    }
}

/// The loop's link queries on a ``FakeDeviceLayer``.
final class FakeLinkQuery: LinkQuerying {
    private weak var layer: FakeDeviceLayer?

    init(layer: FakeDeviceLayer) { self.layer = layer }

    func link(named name: String) throws -> LinkInfo? { try layer?.link(named: name) }
    func link(index: Int32) throws -> LinkInfo? { layer?.linkInfo(index: index) }
}
