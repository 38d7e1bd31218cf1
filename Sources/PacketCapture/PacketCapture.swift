import Foundation
import Pcapng
import Synchronization
import SwitchCore

/// One running capture: the ports and directions it records, its ring, and the pcapng framing of
/// what it recorded. Created by the data plane (``CaptureExtension/add(_:)`` on the packet loop),
/// read by the control connection that streams it.
///
/// ## Concurrency model
/// Immutable after `init` except `ring` (see ``CaptureRing``'s own model) and `portsGone`, an
/// atomic the packet loop sets when every captured port was deleted.
public final class CaptureSession: Sendable {
    public struct Interface: Sendable, Equatable {
        public let port: PortID
        public let portName: String
        public let direction: Pcapng.Direction

        public init(port: PortID, portName: String, direction: Pcapng.Direction) {
            self.port = port
            self.portName = portName
            self.direction = direction
        }

        public var name: String { "\(portName)-\(direction == .inbound ? "in" : "out")" }
        public var description: String {
            direction == .inbound ? "\(portName): frames the switch received from the port"
                : "\(portName): frames the switch delivered to the port"
        }
    }

    public let interfaces: [Interface]
    public let snaplen: Int
    public let includeDrops: Bool
    public let ring: CaptureRing
    /// Wall-clock nanoseconds at ``CaptureSession/origin``: timestamps are origin-relative on the
    /// loop (a monotonic clock read) and shifted to the epoch here.
    let epochAtOrigin: UInt64
    let origin: ContinuousClock.Instant
    let portsGone = Atomic<Bool>(false)

    public init(interfaces: [Interface], snaplen: Int, includeDrops: Bool, ringBytes: Int = 4 << 20) {
        self.interfaces = interfaces
        self.snaplen = snaplen
        self.includeDrops = includeDrops
        ring = CaptureRing(bytes: ringBytes, interfaces: interfaces.count)
        origin = .now
        epochAtOrigin = UInt64(Date().timeIntervalSince1970 * 1e9)
    }

    /// Nanoseconds since the epoch (packet loop: one clock read per call).
    @inline(__always) func timestamp() -> UInt64 {
        let d = ContinuousClock.now - origin
        let (s, atto) = d.components
        return epochAtOrigin &+ UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, atto / 1_000_000_000))
    }

    /// True once every captured port has been deleted: nothing more will come.
    public var isOver: Bool { portsGone.load(ordering: .acquiring) }

    // MARK: - pcapng

    /// The section header and one interface description per port and direction.
    public func header(application: String) -> [UInt8] {
        var out: [UInt8] = []
        Pcapng.appendSectionHeader(to: &out, application: application)
        for i in interfaces { Pcapng.appendInterface(to: &out, name: i.name, description: i.description, snaplen: UInt32(snaplen)) }
        return out
    }

    /// Moves up to `limit` recorded frames into `out` as enhanced packet blocks; returns how many.
    public func drain(into out: inout [UInt8], limit: Int = .max) -> Int {
        var n = 0
        let interfaces = self.interfaces
        ring.drain { r in
            guard n < limit else { return false }
            Pcapng.appendPacket(to: &out, interface: UInt32(r.interface), timestampNanoseconds: r.timestamp, data: r.data,
                                originalLength: r.originalLength, direction: interfaces[r.interface].direction,
                                comment: r.dropped ? r.comment : nil, dropped: r.dropped)
            n += 1
            return true
        }
        return n
    }

    /// Interface statistics: per interface, frames the switch offered and frames the ring lost.
    /// Call after the session was removed from the packet loop.
    public func trailer() -> [UInt8] {
        var out: [UInt8] = []
        let now = timestamp()
        for k in interfaces.indices {
            Pcapng.appendStatistics(to: &out, interface: UInt32(k), timestampNanoseconds: now, start: epochAtOrigin,
                                    received: ring.seen(k), dropped: ring.lost(k))
        }
        return out
    }

    /// Frames lost because the reader was too slow (after the session was removed).
    public var lostFrames: UInt64 { interfaces.indices.reduce(0) { $0 + ring.lost($1) } }
}

/// The capture extension: copies the frames of the ports that running ``CaptureSession``s watch
/// into their rings, as received (ingress, top of the stack), as delivered (after VLAN re-tagging)
/// and, when asked, the frames dropped at those ports with the reason and the dropping extension.
///
/// Enabled by the data plane only while a session runs (free when off). Per frame it costs a
/// table lookup per session, and for a watched port one copy into the ring; nothing is allocated.
/// Only the watched ports are taken off the fast path while it runs.
public final class CaptureExtension: SwitchExtension {
    public static let extensionName = "packet-capture"
    public let name = CaptureExtension.extensionName
    public let extensionClass = ExtensionClass.capture

    /// The producer side of one session: interface numbers per port index (-1: not watched).
    final class Tap {
        let session: CaptureSession
        let inbound: UnsafeMutablePointer<Int32>
        let outbound: UnsafeMutablePointer<Int32>
        let slots: Int
        var watched: Set<PortID>

        init(_ session: CaptureSession, slots: Int, indexOf: (PortID) -> Int?) {
            self.session = session
            self.slots = slots
            inbound = .allocate(capacity: slots)
            inbound.initialize(repeating: -1, count: slots)
            outbound = .allocate(capacity: slots)
            outbound.initialize(repeating: -1, count: slots)
            watched = Set(session.interfaces.map(\.port))
            for (k, i) in session.interfaces.enumerated() {
                guard let s = indexOf(i.port), s < slots else { continue }
                (i.direction == .inbound ? inbound : outbound)[s] = Int32(k)
            }
        }

        deinit {
            inbound.deallocate()
            outbound.deallocate()
        }

        func forget(slot s: Int, port: PortID) {
            guard watched.remove(port) != nil else { return }
            if s >= 0 && s < slots {
                inbound[s] = -1
                outbound[s] = -1
            }
            if watched.isEmpty { session.portsGone.store(true, ordering: .releasing) }
        }
    }

    var taps: [Tap] = []

    public init() {}

    /// Starts recording for `session` (on the switch's queue). Its ports must exist. Their fast-path
    /// entries are gone when this returns (``offloadPermission(for:switch:)``), so every later frame
    /// from or to them reaches the capture; the other ports keep theirs.
    public func add(_ session: CaptureSession, on sw: VirtualSwitch) {
        let tap = Tap(session, slots: sw.configuration.maxPorts, indexOf: { sw.portIndex(of: $0) })
        taps.append(tap)
        for port in tap.watched { sw.offloadChanged(port: port) }
    }

    /// Stops recording for `session`; returns how many sessions remain. Its ports that no other
    /// session watches may take the fast path again (with `sw`; without it, the caller disables the
    /// extension, which asks every port again).
    @discardableResult
    public func remove(_ session: CaptureSession, on sw: VirtualSwitch? = nil) -> Int {
        let gone = taps.filter { $0.session === session }
        taps.removeAll { $0.session === session }
        if let sw {
            for port in Set(gone.flatMap(\.watched)) where !isWatched(port) { sw.offloadChanged(port: port) }
        }
        return taps.count
    }

    func isWatched(_ port: PortID) -> Bool { taps.contains { $0.watched.contains(port) } }

    /// Only the captured ports lose the fast path: a frame the fast path forwards never reaches an
    /// extension, and a capture must see every frame of its ports (and delivers them as the slow
    /// path does, so they keep arriving). Ports no session watches keep their entries.
    public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        isWatched(port) ? .mustSeeEveryFrame(reason: "capture running") : .allowed
    }

    public var sessionCount: Int { taps.count }

    public func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        if request.kind == .portDelete, let s = sw.portIndex(of: request.port.id) {
            for t in taps { t.forget(slot: s, port: request.port.id) }
        }
        return .accept
    }

    public func ingress(_ context: inout IngressContext) {
        for t in taps {
            var ts: UInt64 = 0
            for i in context.frames where context.isLive(i) {
                let s = context.batch.sourcePortIndex(i)
                guard s >= 0 && s < t.slots else { continue }
                let k = t.inbound[s]
                guard k >= 0 else { continue }
                if ts == 0 { ts = t.session.timestamp() }
                t.session.ring.write(interface: Int(k), timestamp: ts, data: context.batch.bytes(i), snaplen: t.session.snaplen)
            }
        }
    }

    public func delivered(_ context: DeliveryContext) {
        let s = context.portIndex
        for t in taps where s >= 0 && s < t.slots && t.outbound[s] >= 0 {
            let k = Int(t.outbound[s])
            let ts = t.session.timestamp()
            for i in context.frames {
                t.session.ring.write(interface: k, timestamp: ts, data: context.batch.bytes(Int(i)), snaplen: t.session.snaplen)
            }
        }
    }

    public func dropped(_ context: DropContext) {
        let s = context.portIndex
        for t in taps where t.session.includeDrops && s >= 0 && s < t.slots {
            let k = context.direction == .ingress ? t.inbound[s] : t.outbound[s]
            guard k >= 0 else { continue }
            t.session.ring.write(interface: Int(k), timestamp: t.session.timestamp(), data: context.bytes, snaplen: t.session.snaplen,
                                 dropped: true,
                                 comment: ("dropped: ", context.sw.text(of: context.reason), ", by ",
                                           context.sw.extensionName(atStackIndex: context.reporterIndex) ?? "switch"))
        }
    }

    public var counters: [ExtensionCounter] {
        [ExtensionCounter("sessions", UInt64(taps.count))]
    }
}
