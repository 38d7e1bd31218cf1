/// Direction of a drop report, as in Hyper-V's ReportFilteredNetBufferLists: `ingress` means the
/// port was the frame's source, `egress` means it was a destination. The raw value indexes the
/// core's per-frame drop counters; the wire name is ``description``.
public enum Direction: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case ingress = 0, egress = 1
    public var description: String {
        switch self {
        case .ingress: "ingress"
        case .egress: "egress"
        }
    }
}

/// Per-port traffic counters. `in` = frames received from the port, `out` = delivered to it.
public struct PortCounters: Sendable, Equatable {
    public var framesIn: UInt64
    public var bytesIn: UInt64
    public var framesOut: UInt64
    public var bytesOut: UInt64
    /// Drops by direction, reason text and reporter; only non-zero entries.
    public var drops: [DropKey: UInt64]

    public init(framesIn: UInt64 = 0, bytesIn: UInt64 = 0, framesOut: UInt64 = 0, bytesOut: UInt64 = 0, drops: [DropKey: UInt64] = [:]) {
        self.framesIn = framesIn
        self.bytesIn = bytesIn
        self.framesOut = framesOut
        self.bytesOut = bytesOut
        self.drops = drops
    }

    public struct DropKey: Hashable, Sendable, Comparable {
        public let direction: Direction
        public let reason: String
        /// Who dropped: an extension's name, a core stage (`core:admission`, `core:forwarding`,
        /// `core:delivery`) or `device` (the kernel, e.g. a full receive ring).
        public let reporter: String
        public init(direction: Direction, reason: String, reporter: String) {
            self.direction = direction
            self.reason = reason
            self.reporter = reporter
        }
        public static func < (a: DropKey, b: DropKey) -> Bool {
            (a.direction.rawValue, a.reason, a.reporter) < (b.direction.rawValue, b.reason, b.reporter)
        }
    }

    public var totalDrops: UInt64 { drops.values.reduce(0, +) }
}
