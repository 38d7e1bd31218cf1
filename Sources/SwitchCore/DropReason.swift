/// Direction of a drop report, as in Hyper-V's ReportFilteredNetBufferLists: `ingress` means the
/// port was the frame's source, `egress` means it was a destination.
public enum Direction: UInt8, Sendable, CustomStringConvertible {
    case ingress = 0, egress = 1
    public var description: String { self == .ingress ? "ingress" : "egress" }
}

/// A reason a frame was dropped or a destination excluded. Reasons are small integer codes so
/// per-frame counting costs an array increment; the text lives in the switch's registry.
/// Extensions register their own with ``VirtualSwitch/registerDropReason(_:)`` when enabled.
public struct DropReason: Hashable, Sendable {
    public let code: UInt16
    @inlinable init(code: UInt16) { self.code = code }

    static let builtinNames: [String] = [
        "runt frame (shorter than an Ethernet header)",
        "truncated 802.1Q header",
        "multicast source MAC",
        "truncated IPv4 header",
        "bad IPv4 header (version or header length)",
        "IPv4 total length exceeds frame",
        "truncated IPv6 header",
        "bad IPv6 header (version)",
        "IPv6 payload length exceeds frame",
        "truncated ARP packet",
        "no destination",
        "destination is the source port",
        "destination NIC not connected",
        "all destinations excluded",
        "source port is not accepting traffic",
        "batch full",
        "transmit queue full",
        "transmit error",
        "VLAN not allowed on port",
        "unknown unicast without uplink",
    ]

    public static let runtFrame = DropReason(code: 0)
    public static let truncatedVLANHeader = DropReason(code: 1)
    public static let multicastSourceMAC = DropReason(code: 2)
    public static let truncatedIPv4Header = DropReason(code: 3)
    public static let badIPv4Header = DropReason(code: 4)
    public static let badIPv4Length = DropReason(code: 5)
    public static let truncatedIPv6Header = DropReason(code: 6)
    public static let badIPv6Header = DropReason(code: 7)
    public static let badIPv6Length = DropReason(code: 8)
    public static let truncatedARP = DropReason(code: 9)
    public static let noDestination = DropReason(code: 10)
    public static let destinationIsSource = DropReason(code: 11)
    public static let destinationNotConnected = DropReason(code: 12)
    public static let allDestinationsExcluded = DropReason(code: 13)
    public static let sourceNotAccepting = DropReason(code: 14)
    public static let batchFull = DropReason(code: 15)
    public static let transmitQueueFull = DropReason(code: 16)
    public static let transmitError = DropReason(code: 17)
    public static let vlanNotAllowed = DropReason(code: 18)
    public static let unknownUnicastNoUplink = DropReason(code: 19)
}

/// One reported drop or exclusion.
public struct DropReport: Sendable, Equatable {
    /// The port the report is about: the source for ingress drops, the destination for egress.
    public let port: PortID
    public let direction: Direction
    public let reason: String
    /// The extension that dropped or excluded, or nil for the switch itself.
    public let reporter: String?
}

/// Per-port traffic counters. `in` = frames received from the port, `out` = delivered to it.
public struct PortCounters: Sendable, Equatable {
    public var framesIn: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var framesOut: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Drops by direction and reason text; only non-zero entries.
    public var drops: [DropKey: UInt64] = [:]

    public init() {}

    public struct DropKey: Hashable, Sendable, Comparable {
        public let direction: Direction
        public let reason: String
        public init(direction: Direction, reason: String) {
            self.direction = direction
            self.reason = reason
        }
        public static func < (a: DropKey, b: DropKey) -> Bool {
            (a.direction.rawValue, a.reason) < (b.direction.rawValue, b.reason)
        }
    }

    public var totalDrops: UInt64 { drops.values.reduce(0, +) }
}
