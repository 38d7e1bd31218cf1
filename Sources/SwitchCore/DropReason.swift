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
        "QinQ frame (802.1ad or stacked VLAN tags)",
        "frame larger than the destination's MTU",
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
    public static let qinqNotAllowed = DropReason(code: 20)
    public static let frameTooLarge = DropReason(code: 21)
}

/// One reported drop or exclusion.
public struct DropReport: Sendable, Equatable {
    /// The port the report is about: the source for ingress drops, the destination for egress.
    public let port: PortID
    public let direction: Direction
    public let reason: String
    /// The extension that dropped or excluded, or the core stage (``VirtualSwitch/coreReporters``).
    public let reporter: String
}

