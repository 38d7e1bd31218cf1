/// Identifier of a switch port.
///
/// Port 0 (``PortID/switchItself``) is reserved: it is the switch itself, the trusted source of
/// frames that extensions inject. Real ports get ids above it.
public struct PortID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ value: UInt32) { self.rawValue = value }

    /// The switch itself: source of injected (trusted) frames, never a destination.
    public static let switchItself = PortID(0)

    public static func < (a: PortID, b: PortID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// Index of a NIC on a port. 0 is the NIC attached directly to the port (the only one today;
/// Hyper-V uses 1...32 for team members of an external adapter).
public typealias NICIndex = UInt8

/// A 48-bit Ethernet address, stored in the low 48 bits of a `UInt64` (first octet most significant)
/// so that it can key the forwarding table without hashing bytes.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: UInt64

    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        rawValue = UInt64(b0) << 40 | UInt64(b1) << 32 | UInt64(b2) << 24 | UInt64(b3) << 16 | UInt64(b4) << 8 | UInt64(b5)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (also `-` separated). Returns nil on anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var value: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        rawValue = value
    }

    /// Reads six bytes at `pointer` (network order).
    @inlinable @inline(__always)
    public init(bytes pointer: UnsafeRawPointer) {
        var v: UInt64 = 0
        for i in 0..<6 { v = v << 8 | UInt64(pointer.load(fromByteOffset: i, as: UInt8.self)) }
        rawValue = v
    }

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64($0))) } }

    /// Group (multicast or broadcast) addresses have the I/G bit set in the first octet.
    @inlinable public var isMulticast: Bool { rawValue & 0x0100_0000_0000 != 0 }
    @inlinable public var isBroadcast: Bool { rawValue == 0xFFFF_FFFF_FFFF }
    @inlinable public var isZero: Bool { rawValue == 0 }
    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)

    public var description: String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }
    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.rawValue < b.rawValue }
}

/// An 802.1Q VLAN id, 1...4094. Id 0 means "untagged" wherever a VLAN is optional.
public typealias VLANID = UInt16
