import SwitchCore

/// One port mirror as the packet loop knows it (Hyper-V port mirroring, OVS `Mirror`): copies of
/// the frames the `sources` ports send into the switch (`inbound`) and/or receive from it
/// (`outbound`), optionally only those in VLAN `vlan`, go to port `destination`. Ports by name, so
/// a mirror outlives its ports: it is inactive while a port is missing and resumes when a port of
/// that name is back.
public struct MirrorDefinition: Sendable, Equatable {
    public var name: String
    public var sources: [String]
    public var inbound: Bool
    public var outbound: Bool
    /// Only frames in this VLAN (the switch's VLAN of the frame: a trunk's tag, an access port's
    /// VLAN); nil selects every frame.
    public var vlan: VLANID?
    public var destination: String

    public init(name: String, sources: [String], inbound: Bool, outbound: Bool, vlan: VLANID?, destination: String) {
        self.name = name
        self.sources = sources
        self.inbound = inbound
        self.outbound = outbound
        self.vlan = vlan
        self.destination = destination
    }
}

/// A mirror's state and counters (read on the switch's queue).
public struct MirrorStatus: Sendable, Equatable {
    public var definition: MirrorDefinition
    /// The ports it names that do not exist now (a mirror copies only while its destination and
    /// at least one source exist).
    public var missingPorts: [String]
    public var active: Bool
    /// Copies that reached the destination, and their bytes.
    public var frames: UInt64
    public var bytes: UInt64
    /// Copies not sent: the destination's queue had no room left after its normal frames, it was
    /// not connected, or more copies than the mirror holds per batch (its capacity).
    public var drops: UInt64
}

/// The port-mirroring extension (capture class): keeps copies of the selected frames in a
/// preallocated batch per mirror, as received from a source (top of the stack, before any filter)
/// and as delivered to a source (the bytes the port received), and sends them to the destination
/// after the batch's normal frames, only into the room the destination has left
/// (``CopyContext``). Copies are counted per mirror, never as the ports' frames or drops.
///
/// A frame that is both received from and delivered to sources of one mirror is copied once (as
/// received), as OVS does. Mirrored source ports are kept off the fast path (every frame must be
/// seen). Enabled by the data plane only while a mirror exists; nothing is allocated per frame.
public final class PortMirrorExtension: SwitchExtension {
    public static let extensionName = "port-mirror"
    public let name = PortMirrorExtension.extensionName
    public let extensionClass = ExtensionClass.capture

    /// The packet loop's side of one mirror.
    final class Mirror {
        var definition: MirrorDefinition
        let slots: Int
        /// Per port index: bit 0 mirror what it sends (in), bit 1 what it receives (out).
        let selects: UnsafeMutablePointer<UInt8>
        /// Per frame index of the switch's batch: copied on ingress in this batch (copied once).
        let copiedIn: UnsafeMutablePointer<Bool>
        let batchCapacity: Int
        var anyCopiedIn = false
        let vlan: Int32
        var destination: PortID?
        var active = false
        var missing: [String] = []
        let copies: FrameBatch
        /// 0, 1, 2, ...: the copies go out in the order they were taken.
        let order: UnsafeMutablePointer<UInt16>
        var frames: UInt64 = 0
        var bytes: UInt64 = 0
        var drops: UInt64 = 0

        init(_ definition: MirrorDefinition, slots: Int, batchCapacity: Int) {
            self.definition = definition
            self.slots = slots
            self.batchCapacity = batchCapacity
            vlan = definition.vlan.map { Int32($0) } ?? -1
            selects = .allocate(capacity: slots)
            selects.initialize(repeating: 0, count: slots)
            copiedIn = .allocate(capacity: batchCapacity)
            copiedIn.initialize(repeating: false, count: batchCapacity)
            // Room for a batch received from a source plus a batch delivered to sources.
            copies = FrameBatch(capacity: 2 * batchCapacity, maxDestinations: 1)
            order = .allocate(capacity: copies.capacity)
            for k in 0..<copies.capacity { (order + k).initialize(to: UInt16(k)) }
        }

        deinit {
            selects.deallocate()
            copiedIn.deallocate()
            order.deallocate()
        }

        /// Looks the ports up again (after a port came or went). `gone`: a port being deleted.
        func resolve(_ sw: VirtualSwitch, gone: PortID?) {
            selects.update(repeating: 0, count: slots)
            func index(_ name: String) -> (PortID, Int)? {
                guard let p = sw.port(named: name), p.id != gone, let s = sw.portIndex(of: p.id), s < slots else { return nil }
                return (p.id, s)
            }
            missing = []
            let dest = index(definition.destination)
            if dest == nil { missing.append(definition.destination) }
            var sources: [Int] = []
            for name in definition.sources {
                if let (_, s) = index(name) { sources.append(s) } else { missing.append(name) }
            }
            destination = dest?.0
            active = dest != nil && !sources.isEmpty
            guard active else { return }
            let bits: UInt8 = (definition.inbound ? 1 : 0) | (definition.outbound ? 2 : 0)
            for s in sources { selects[s] = bits }
        }

        @inline(__always) func selected(_ batch: FrameBatch, _ i: Int) -> Bool {
            vlan < 0 || Int32(batch.parsed(i).vlan) == vlan
        }

        @inline(__always) func copy(_ batch: FrameBatch, _ i: Int) {
            if copies.append(batch.bytes(i), vnetHeader: batch.virtioHeader(i)) == nil { drops &+= 1 }
        }
    }

    var mirrors: [Mirror] = []
    private var anyInbound = false

    public init() {}

    /// Makes the mirrors exactly `definitions` (on the switch's queue): counters of a mirror whose
    /// definition is unchanged carry on. Takes the affected ports' flows off the fast path (or
    /// lets them back) before it returns.
    public func set(_ definitions: [MirrorDefinition], on sw: VirtualSwitch) {
        let old = mirrors
        mirrors = definitions.map { d in
            if let m = old.first(where: { $0.definition == d }) { return m }
            return Mirror(d, slots: sw.configuration.maxPorts, batchCapacity: sw.configuration.batchCapacity)
        }
        resolve(sw, gone: nil)
        var touched = Set<String>()
        for m in old + mirrors { touched.formUnion(m.definition.sources) }
        for name in touched.sorted() {
            if let p = sw.port(named: name) { sw.offloadChanged(port: p.id) }
        }
    }

    public var mirrorCount: Int { mirrors.count }

    /// Every mirror with its state and counters, in the order given to ``set(_:on:)``.
    public var statuses: [MirrorStatus] {
        mirrors.map {
            MirrorStatus(definition: $0.definition, missingPorts: $0.missing, active: $0.active, frames: $0.frames,
                         bytes: $0.bytes, drops: $0.drops)
        }
    }

    func resolve(_ sw: VirtualSwitch, gone: PortID?) {
        for m in mirrors { m.resolve(sw, gone: gone) }
        anyInbound = mirrors.contains { $0.active && $0.definition.inbound }
    }

    public func attached(to sw: VirtualSwitch) { resolve(sw, gone: nil) }

    public func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        if request.kind == .portDelete { resolve(sw, gone: request.port.id) }
        return .accept
    }

    public func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch) {
        // A port of a mirror is back (by name): the mirror resumes. (During PORT_CREATE the port
        // has no index yet; its NIC_CREATE follows at once.)
        if request.kind == .nicCreate || request.kind == .nicConnect, mirrors.contains(where: { !$0.missing.isEmpty }) {
            resolve(sw, gone: nil)
        }
    }

    /// Mirrored sources must show every frame to the switch (both directions of their traffic).
    public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        guard let name = sw.port(port)?.name, let m = mirrors.first(where: { $0.definition.sources.contains(name) }) else {
            return .allowed
        }
        return .mustSeeEveryFrame(reason: "mirrored by \(m.definition.name)")
    }

    public func ingress(_ context: inout IngressContext) {
        guard anyInbound else { return }
        let batch = context.batch
        for m in mirrors where m.active {
            for i in context.frames where context.isLive(i) {
                let s = batch.sourcePortIndex(i)
                guard s >= 0 && s < m.slots && m.selects[s] & 1 != 0 && m.selected(batch, i) else { continue }
                m.copy(batch, i)
                if i < m.batchCapacity {
                    m.copiedIn[i] = true
                    m.anyCopiedIn = true
                }
            }
        }
    }

    public func delivered(_ context: DeliveryContext) {
        let s = context.portIndex
        for m in mirrors where m.active && s >= 0 && s < m.slots && m.selects[s] & 2 != 0 {
            for f in context.frames {
                let i = Int(f)
                if m.anyCopiedIn && i < m.batchCapacity && m.copiedIn[i] { continue }  // copied as it came in
                if m.selected(context.batch, i) { m.copy(context.batch, i) }
            }
        }
    }

    public func batchDelivered(_ context: CopyContext) {
        for m in mirrors {
            if m.anyCopiedIn {
                m.copiedIn.update(repeating: false, count: m.batchCapacity)
                m.anyCopiedIn = false
            }
            let n = m.copies.count
            guard n > 0 else { continue }
            var sent = 0
            if let d = m.destination {
                sent = context.transmit(m.copies, frames: UnsafeBufferPointer(start: m.order, count: n), to: d)
            }
            var bytes: UInt64 = 0
            for k in 0..<sent { bytes &+= UInt64(m.copies.length(k)) }
            m.frames &+= UInt64(sent)
            m.bytes &+= bytes
            m.drops &+= UInt64(n - sent)
            m.copies.reset()
        }
    }

    public var counters: [ExtensionCounter] {
        [ExtensionCounter("mirrors", UInt64(mirrors.count)),
         ExtensionCounter("copies", mirrors.reduce(0) { $0 &+ $1.frames }),
         ExtensionCounter("copy-drops", mirrors.reduce(0) { $0 &+ $1.drops })]
    }
}
