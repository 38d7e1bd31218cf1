/// The L2 facts the switch needs about a frame, parsed once when the frame enters the switch.
///
/// Parsing is bounds-checked: a frame too short for a header it announces is reported as
/// malformed (and dropped with a reason), never read past its end. L3 headers are only checked for
/// consistency here; their fields are read lazily through ``FrameBatch/ipv4(_:)`` and friends.
public struct ParsedHeaders: Equatable, Sendable {
    public var destination = MACAddress(rawValue: 0)
    public var source = MACAddress(rawValue: 0)
    /// The outer 802.1Q/802.1ad tag's TCI, if the frame carries one.
    public var vlanTCI: UInt16 = 0
    public var isTagged = false
    /// The outer tag is an 802.1ad S-tag (TPID 0x88A8).
    public var isServiceTagged = false
    /// EtherType after the outer tag (the payload's protocol; 0x8100 or 0x88A8 for stacked tags).
    public var etherType: UInt16 = 0
    /// Offset of the L3 header from the start of the frame.
    public var l3Offset: UInt16 = 0
    /// VLAN the switch classified the frame into (0 = untagged domain). Set on admission.
    public var vlan: VLANID = 0

    public init() {}

    public var taggedVLAN: VLANID { isTagged ? vlanTCI & 0x0FFF : 0 }
    /// An 802.1ad outer tag, or a second tag after the first (QinQ).
    @inlinable public var isQinQ: Bool {
        isServiceTagged || (isTagged && (etherType == EtherType.vlan || etherType == EtherType.qinq))
    }
}

public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let vlan: UInt16 = 0x8100
    public static let qinq: UInt16 = 0x88A8
    public static let ipv6: UInt16 = 0x86DD
}

/// Why a frame failed parsing. Each maps to a ``DropReason``.
public enum MalformedFrame: UInt8, Sendable, CaseIterable {
    case runt, truncatedVLAN, multicastSource, truncatedIPv4, badIPv4Header, badIPv4Length
    case truncatedIPv6, badIPv6Header, badIPv6Length, truncatedARP

    public var reason: DropReason {
        switch self {
        case .runt: .runtFrame
        case .truncatedVLAN: .truncatedVLANHeader
        case .multicastSource: .multicastSourceMAC
        case .truncatedIPv4: .truncatedIPv4Header
        case .badIPv4Header: .badIPv4Header
        case .badIPv4Length: .badIPv4Length
        case .truncatedIPv6: .truncatedIPv6Header
        case .badIPv6Header: .badIPv6Header
        case .badIPv6Length: .badIPv6Length
        case .truncatedARP: .truncatedARP
        }
    }
}

public enum FrameParser {
    /// Parses the Ethernet header, one outer VLAN tag, and checks the IPv4/IPv6/ARP header
    /// announced by the EtherType. Returns nil and fills `headers` on success.
    @inlinable
    public static func parse(_ p: UnsafeRawPointer, length: Int, into h: inout ParsedHeaders) -> MalformedFrame? {
        guard length >= 14 else { return .runt }
        h.destination = MACAddress(bytes: p)
        h.source = MACAddress(bytes: p + 6)
        var type = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
        var l3 = 14
        h.isTagged = false
        h.isServiceTagged = false
        h.vlanTCI = 0
        if type == EtherType.vlan || type == EtherType.qinq {
            guard length >= 18 else { return .truncatedVLAN }
            h.isTagged = true
            h.isServiceTagged = type == EtherType.qinq
            h.vlanTCI = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
            type = UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
            l3 = 18
        }
        h.etherType = type
        h.l3Offset = UInt16(l3)
        h.vlan = h.taggedVLAN
        if h.source.isMulticast { return .multicastSource }
        let available = length - l3
        switch type {
        case EtherType.ipv4:
            guard available >= 20 else { return .truncatedIPv4 }
            let vihl = p.load(fromByteOffset: l3, as: UInt8.self)
            let headerLength = Int(vihl & 0x0F) * 4
            guard vihl >> 4 == 4, headerLength >= 20, headerLength <= available else { return .badIPv4Header }
            let total = Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: l3 + 2, as: UInt16.self)))
            guard total >= headerLength, total <= available else { return .badIPv4Length }
        case EtherType.ipv6:
            guard available >= 40 else { return .truncatedIPv6 }
            guard p.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 6 else { return .badIPv6Header }
            let payload = Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: l3 + 4, as: UInt16.self)))
            guard 40 + payload <= available else { return .badIPv6Length }
        case EtherType.arp:
            guard available >= 8 else { return .truncatedARP }
            let hlen = Int(p.load(fromByteOffset: l3 + 4, as: UInt8.self))
            let plen = Int(p.load(fromByteOffset: l3 + 5, as: UInt8.self))
            guard available >= 8 + 2 * (hlen + plen) else { return .truncatedARP }
        default:
            break
        }
        return nil
    }
}

/// Lazily read L3 fields (bounds were checked on admission).
public struct IPv4Header: Sendable, Equatable {
    public let source: UInt32
    public let destination: UInt32
    public let proto: UInt8
    public let headerLength: Int
}

public struct ARPPacket: Sendable, Equatable {
    public let operation: UInt16
    public let senderMAC: MACAddress
    public let senderIP: UInt32
    public let targetIP: UInt32
}

extension FrameBatch {
    /// The IPv4 header of frame `i`, or nil when it is not IPv4.
    public func ipv4(_ i: Int) -> IPv4Header? {
        let h = headers[i]
        guard h.etherType == EtherType.ipv4 else { return nil }
        let p = UnsafeRawPointer(frame(i)) + Int(h.l3Offset)
        return IPv4Header(
            source: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self)),
            destination: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
            proto: p.load(fromByteOffset: 9, as: UInt8.self),
            headerLength: Int(p.load(as: UInt8.self) & 0x0F) * 4)
    }

    /// The ARP packet of frame `i` (Ethernet/IPv4 only), or nil.
    public func arp(_ i: Int) -> ARPPacket? {
        let h = headers[i]
        guard h.etherType == EtherType.arp, length(i) - Int(h.l3Offset) >= 28 else { return nil }
        let p = UnsafeRawPointer(frame(i)) + Int(h.l3Offset)
        guard p.load(fromByteOffset: 4, as: UInt8.self) == 6, p.load(fromByteOffset: 5, as: UInt8.self) == 4 else { return nil }
        return ARPPacket(
            operation: UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)),
            senderMAC: MACAddress(bytes: p + 8),
            senderIP: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt32.self)),
            targetIP: UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)))
    }
}
