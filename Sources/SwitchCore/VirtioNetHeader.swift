/// The 10-byte `struct virtio_net_hdr` that travels with a frame when the TAP or AF_PACKET socket
/// uses `IFF_VNET_HDR`/`PACKET_VNET_HDR`. It describes TSO/GSO superframes and partial checksums;
/// the switch passes it through untouched except when it moves the L3 header (VLAN push/pop).
///
/// Fields are in host byte order (little-endian on every platform tapswitch runs on).
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 10
    public static let needsChecksum: UInt8 = 1
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    @inlinable public init(loading p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        gsoSize = p.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
        checksumStart = p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
        checksumOffset = p.loadUnaligned(fromByteOffset: 8, as: UInt16.self)
    }

    @inlinable public func store(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset, toByteOffset: 8, as: UInt16.self)
    }

    /// Shifts the offsets that count from the start of the frame, for a header inserted (positive)
    /// or removed (negative) in front of the L3 header.
    @inlinable public mutating func shift(by delta: Int) {
        if flags & Self.needsChecksum != 0 {
            checksumStart = UInt16(truncatingIfNeeded: Int(checksumStart) + delta)
        }
        if gsoType != Self.gsoNone, headerLength != 0 {
            headerLength = UInt16(truncatingIfNeeded: Int(headerLength) + delta)
        }
    }
}
