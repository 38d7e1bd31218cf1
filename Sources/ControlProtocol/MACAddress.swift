/// A 48-bit Ethernet address, written and parsed as six colon-separated hex pairs.
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// The address in the low 48 bits, first octet most significant.
    public let value: UInt64

    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    /// Parses `52:54:00:12:34:56` (case-insensitive). Returns nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            v = v << 8 | UInt64(byte)
        }
        value = v
    }

    public init(octets: [UInt8]) {
        precondition(octets.count == 6, "a MAC address has 6 octets")
        value = octets.reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64($0))) } }

    /// Group (multicast or broadcast) bit: such an address can never be a NIC's own address.
    public var isMulticast: Bool { (value >> 40) & 0x01 != 0 }
    public var isZero: Bool { value == 0 }

    public var description: String {
        octets.map { b in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.value < b.value }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let text = try c.decode(String.self)
        self = try Validate.mac(text, field: codingPathString(decoder.codingPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
