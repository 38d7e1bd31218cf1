/// The pcapng capture file format (IETF draft-ietf-opsawg-pcapng), as much of it as tapswitch
/// writes and reads: section header, one interface description per captured port and direction
/// (Ethernet, nanosecond timestamps), enhanced packet blocks with direction flags, a comment and a
/// verdict for dropped frames, and interface statistics at the end. Little-endian (the byte-order
/// magic tells readers). Pure Swift, no I/O: callers append blocks to a byte buffer.
public enum Pcapng {
    public static let linkTypeEthernet: UInt16 = 1

    public enum Direction: UInt32, Sendable {
        case inbound = 1
        case outbound = 2
    }

    /// The verdict written for a dropped frame: type 1 ("Linux eBPF TC") with `TC_ACT_SHOT`, the
    /// value Wireshark shows as a drop.
    static let verdictDropped: [UInt8] = [1, 2, 0, 0, 0, 0, 0, 0, 0]

    // MARK: - Writing

    /// A section header block naming the application.
    public static func appendSectionHeader(to out: inout [UInt8], application: String) {
        appendBlock(to: &out, type: 0x0A0D_0D0A) { b in
            put32(&b, 0x1A2B_3C4D)
            put16(&b, 1)
            put16(&b, 0)
            put64(&b, UInt64.max)  // section length unknown (a stream)
            putOption(&b, 4, Array(application.utf8))
            putEndOfOptions(&b)
        }
    }

    /// An interface description block: Ethernet, `snaplen`, nanosecond timestamps.
    public static func appendInterface(to out: inout [UInt8], name: String, description: String, snaplen: UInt32) {
        appendBlock(to: &out, type: 1) { b in
            put16(&b, linkTypeEthernet)
            put16(&b, 0)
            put32(&b, snaplen)
            putOption(&b, 2, Array(name.utf8))
            putOption(&b, 3, Array(description.utf8))
            putOption(&b, 9, [9])  // if_tsresol: 10^-9 s
            putEndOfOptions(&b)
        }
    }

    /// An enhanced packet block. `comment` and `dropped` mark a frame the switch dropped.
    public static func appendPacket(to out: inout [UInt8], interface: UInt32, timestampNanoseconds ts: UInt64,
                                    data: UnsafeRawBufferPointer, originalLength: Int, direction: Direction,
                                    comment: UnsafeRawBufferPointer? = nil, dropped: Bool = false) {
        appendBlock(to: &out, type: 6) { b in
            put32(&b, interface)
            put32(&b, UInt32(truncatingIfNeeded: ts >> 32))
            put32(&b, UInt32(truncatingIfNeeded: ts))
            put32(&b, UInt32(data.count))
            put32(&b, UInt32(originalLength))
            b.append(contentsOf: data)
            pad(&b)
            var flags: [UInt8] = []
            put32(&flags, direction.rawValue)
            putOption(&b, 2, flags)
            if let comment, comment.count > 0 { putOption(&b, 1, Array(comment)) }
            if dropped { putOption(&b, 7, verdictDropped) }
            putEndOfOptions(&b)
        }
    }

    /// Interface statistics: frames seen (`received`) and frames the capture lost (`dropped`).
    public static func appendStatistics(to out: inout [UInt8], interface: UInt32, timestampNanoseconds ts: UInt64,
                                        start: UInt64, received: UInt64, dropped: UInt64) {
        appendBlock(to: &out, type: 5) { b in
            put32(&b, interface)
            put32(&b, UInt32(truncatingIfNeeded: ts >> 32))
            put32(&b, UInt32(truncatingIfNeeded: ts))
            putOption(&b, 2, timestampOption(start))
            putOption(&b, 3, timestampOption(ts))
            var v: [UInt8] = []
            put64(&v, received)
            putOption(&b, 4, v)
            v = []
            put64(&v, dropped)
            putOption(&b, 5, v)
            putEndOfOptions(&b)
        }
    }

    static func timestampOption(_ ts: UInt64) -> [UInt8] {
        var v: [UInt8] = []
        put32(&v, UInt32(truncatingIfNeeded: ts >> 32))
        put32(&v, UInt32(truncatingIfNeeded: ts))
        return v
    }

    static func appendBlock(to out: inout [UInt8], type: UInt32, _ body: (inout [UInt8]) -> Void) {
        let start = out.count
        put32(&out, type)
        put32(&out, 0)
        body(&out)
        let total = UInt32(out.count - start + 4)
        put32(&out, total)
        withUnsafeBytes(of: total.littleEndian) { t in
            for k in 0..<4 { out[start + 4 + k] = t[k] }
        }
    }

    static func put16(_ b: inout [UInt8], _ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
    static func put32(_ b: inout [UInt8], _ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
    static func put64(_ b: inout [UInt8], _ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
    static func pad(_ b: inout [UInt8]) { while b.count % 4 != 0 { b.append(0) } }

    static func putOption(_ b: inout [UInt8], _ code: UInt16, _ value: [UInt8]) {
        put16(&b, code)
        put16(&b, UInt16(value.count))
        b.append(contentsOf: value)
        pad(&b)
    }

    static func putEndOfOptions(_ b: inout [UInt8]) {
        put16(&b, 0)
        put16(&b, 0)
    }

    // MARK: - Reading

    /// One block as read back: its type and body (between the length fields).
    public struct Block: Sendable, Equatable {
        public var type: UInt32
        public var body: [UInt8]

        public static let sectionHeader: UInt32 = 0x0A0D_0D0A
        public static let interfaceDescription: UInt32 = 1
        public static let interfaceStatistics: UInt32 = 5
        public static let enhancedPacket: UInt32 = 6

        func u32(_ at: Int) -> UInt32 {
            guard at + 4 <= body.count else { return 0 }
            return UInt32(body[at]) | UInt32(body[at + 1]) << 8 | UInt32(body[at + 2]) << 16 | UInt32(body[at + 3]) << 24
        }

        /// The options after `fixed` bytes of fixed fields: code and value.
        func options(after fixed: Int) -> [(code: UInt16, value: [UInt8])] {
            var out: [(UInt16, [UInt8])] = []
            var p = fixed
            while p + 4 <= body.count {
                let code = UInt16(body[p]) | UInt16(body[p + 1]) << 8
                let len = Int(UInt16(body[p + 2]) | UInt16(body[p + 3]) << 8)
                if code == 0 || p + 4 + len > body.count { break }
                out.append((code, Array(body[(p + 4)..<(p + 4 + len)])))
                p += 4 + (len + 3) / 4 * 4
            }
            return out
        }

        static func u64(_ v: [UInt8]) -> UInt64 {
            v.prefix(8).enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }

        /// Enhanced packet: interface, timestamp (high and low words), captured and original length,
        /// the data, direction flags and comment.
        public var packet: Packet? {
            guard type == Self.enhancedPacket, body.count >= 20 else { return nil }
            let captured = Int(u32(12))
            guard 20 + captured <= body.count else { return nil }
            var p = Packet(interface: u32(0), timestamp: UInt64(u32(4)) << 32 | UInt64(u32(8)), data: Array(body[20..<(20 + captured)]),
                           originalLength: Int(u32(16)))
            for (code, value) in options(after: 20 + (captured + 3) / 4 * 4) {
                switch code {
                case 1: p.comment = String(decoding: value, as: UTF8.self)
                case 2: p.flags = UInt32(Self.u64(value))
                case 7: p.dropped = value == Pcapng.verdictDropped
                default: break
                }
            }
            return p
        }

        /// Interface description: the name (if_name).
        public var interfaceName: String? {
            guard type == Self.interfaceDescription else { return nil }
            return options(after: 8).first { $0.code == 2 }.map { String(decoding: $0.value, as: UTF8.self) }
        }

        /// Interface statistics: interface, frames received and dropped by the capture.
        public var statistics: (interface: UInt32, received: UInt64, dropped: UInt64)? {
            guard type == Self.interfaceStatistics, body.count >= 12 else { return nil }
            var received: UInt64 = 0
            var dropped: UInt64 = 0
            for (code, value) in options(after: 12) {
                if code == 4 { received = Self.u64(value) }
                if code == 5 { dropped = Self.u64(value) }
            }
            return (u32(0), received, dropped)
        }
    }

    public struct Packet: Sendable, Equatable {
        public var interface: UInt32
        /// Nanoseconds since the epoch.
        public var timestamp: UInt64
        public var data: [UInt8]
        public var originalLength: Int
        public var flags: UInt32 = 0
        public var comment: String?
        public var dropped = false
        public var direction: Direction? { Direction(rawValue: flags & 3) }
    }

    /// Splits a stream into blocks as bytes arrive (little-endian sections only).
    public struct StreamReader: Sendable {
        private var pending: [UInt8] = []
        public init() {}

        /// Feeds bytes; returns the blocks they completed. Throws on a malformed block.
        public mutating func feed<C: Collection>(_ bytes: C) throws(FormatError) -> [Block] where C.Element == UInt8 {
            pending.append(contentsOf: bytes)
            var blocks: [Block] = []
            var p = 0
            while pending.count - p >= 12 {
                let type = u32(pending, p)
                let length = Int(u32(pending, p + 4))
                guard length >= 12, length % 4 == 0 else { throw FormatError(message: "block of type \(type) with bad length \(length)") }
                guard pending.count - p >= length else { break }
                blocks.append(Block(type: type, body: Array(pending[(p + 8)..<(p + length - 4)])))
                p += length
            }
            pending.removeFirst(p)
            return blocks
        }

        /// True when the stream ended on a block boundary.
        public var isAtBoundary: Bool { pending.isEmpty }

        func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
            UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
        }
    }

    public struct FormatError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { "bad pcapng stream: \(message)" }
    }

    /// Reads a whole stream (tests).
    public static func read(_ bytes: [UInt8]) throws(FormatError) -> [Block] {
        var r = StreamReader()
        let blocks = try r.feed(bytes)
        guard r.isAtBoundary else { throw FormatError(message: "stream ends inside a block") }
        return blocks
    }
}
