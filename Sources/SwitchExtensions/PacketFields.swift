import SwitchCore

/// Where a frame's transport header is, for the guards. Every read is bounded by the IP packet's
/// own length (the switch's parser already checked that the IP header and the length it announces
/// fit in the frame), so a truncated or lying packet is reported, never read past.
enum Transport {
    /// Not IPv4/IPv6, or a non-first fragment (no transport header in it).
    case none
    /// Protocol number, offset of its header in the frame, and the end of the IP packet.
    case header(proto: UInt8, offset: Int, end: Int)
    /// The header chain runs past the packet, or is longer than the guards follow.
    case unreadable
}

enum PacketFields {
    static let udp: UInt8 = 17
    static let icmp: UInt8 = 1
    static let icmpv6: UInt8 = 58
    /// IPv6 extension headers followed before giving up (RFC 7112 wants the whole chain in the first fragment).
    static let maxExtensionHeaders = 8

    @inline(__always)
    static func u8(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
    @inline(__always)
    static func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 { UInt16(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inline(__always)
    static func u32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 { UInt32(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always)
    static func u64(_ p: UnsafeRawPointer, _ o: Int) -> UInt64 { UInt64(bigEndian: p.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }

    /// The transport header of frame `i` (IPv4 or IPv6, after one VLAN tag).
    @inline(__always)
    static func transport(_ batch: FrameBatch, _ i: Int, _ h: ParsedHeaders) -> Transport {
        let p = UnsafeRawPointer(batch.frame(i))
        let l3 = Int(h.l3Offset)
        let available = batch.length(i) - l3
        switch h.etherType {
        case EtherType.ipv4:
            guard available >= 20 else { return .unreadable }
            let ihl = Int(u8(p, l3) & 0x0F) * 4
            let total = Int(u16(p, l3 + 2))
            guard ihl >= 20, total >= ihl, total <= available else { return .unreadable }
            if u16(p, l3 + 6) & 0x1FFF != 0 { return .none }
            return .header(proto: u8(p, l3 + 9), offset: l3 + ihl, end: l3 + total)
        case EtherType.ipv6:
            guard available >= 40 else { return .unreadable }
            let end = l3 + 40 + Int(u16(p, l3 + 4))
            guard end <= l3 + available else { return .unreadable }
            var next = u8(p, l3 + 6)
            var offset = l3 + 40
            for _ in 0..<maxExtensionHeaders {
                switch next {
                case 0, 43, 60:  // hop-by-hop, routing, destination options
                    guard offset + 2 <= end else { return .unreadable }
                    let length = (Int(u8(p, offset + 1)) + 1) * 8
                    next = u8(p, offset)
                    offset += length
                case 44:  // fragment
                    guard offset + 8 <= end else { return .unreadable }
                    if u16(p, offset + 2) >> 3 != 0 { return .none }
                    next = u8(p, offset)
                    offset += 8
                case 51:  // authentication header
                    guard offset + 2 <= end else { return .unreadable }
                    let length = (Int(u8(p, offset + 1)) + 2) * 4
                    next = u8(p, offset)
                    offset += length
                default:
                    guard offset <= end else { return .unreadable }
                    return .header(proto: next, offset: offset, end: end)
                }
            }
            return .unreadable
        default:
            return .none
        }
    }

    /// True for IPv6 link-local (fe80::/10) addresses.
    @inline(__always)
    static func isLinkLocal6(_ high: UInt64) -> Bool { high >> 54 == 0x3FA }
}
