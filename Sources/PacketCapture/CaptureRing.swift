import Synchronization

/// A single-producer, single-consumer ring of captured frames in one preallocated buffer.
///
/// The packet loop writes (``write(interface:timestamp:data:snaplen:dropped:comment:)``), a control
/// connection's thread reads (``drain(_:)``). A write that does not fit is not waited for: the frame
/// is counted as lost for its interface and the packet loop goes on, so a slow reader costs capture
/// frames, never switch frames. Nothing is allocated after `init`.
///
/// ## Concurrency model
/// `head` is stored only by the producer, `tail` only by the consumer, each with release ordering
/// after the bytes it publishes or frees, and loaded by the other side with acquire ordering. The
/// per-interface counters (`seen`, `lost`) are written by the producer only and read by the
/// consumer once the producer has stopped (after the session was removed on the packet-loop queue,
/// a hop that orders the two). That is what `@unchecked Sendable` promises.
public final class CaptureRing: @unchecked Sendable {
    /// Record header: length, captured length, original length, interface, flags, timestamp,
    /// comment length; records are 32-byte aligned so a wrap filler always has room for a header.
    static let headerSize = 32
    static let align = 32
    static let filler: UInt16 = 0xFFFF

    public let capacity: Int
    let mask: Int
    let buffer: UnsafeMutableRawPointer
    let head = Atomic<Int>(0)
    let tail = Atomic<Int>(0)
    /// Frames offered per interface (captured or lost), and those lost because the ring was full.
    let seenCounts: UnsafeMutablePointer<UInt64>
    let lostCounts: UnsafeMutablePointer<UInt64>
    public let interfaceCount: Int

    /// - Parameters:
    ///   - bytes: ring size, rounded up to a power of two (at least 64 KiB).
    ///   - interfaces: number of capture interfaces counted separately.
    public init(bytes: Int, interfaces: Int) {
        var c = 65_536
        while c < bytes { c <<= 1 }
        capacity = c
        mask = c - 1
        buffer = .allocate(byteCount: c, alignment: Self.align)
        interfaceCount = max(1, interfaces)
        seenCounts = .allocate(capacity: interfaceCount)
        seenCounts.initialize(repeating: 0, count: interfaceCount)
        lostCounts = .allocate(capacity: interfaceCount)
        lostCounts.initialize(repeating: 0, count: interfaceCount)
    }

    deinit {
        buffer.deallocate()
        seenCounts.deallocate()
        lostCounts.deallocate()
    }

    // MARK: - Producer (the packet loop)

    /// Copies up to `snaplen` bytes of a frame, plus an optional comment made of four pieces
    /// (written back to back, so a drop's text needs no formatting). Returns false when it was lost.
    @discardableResult
    public func write(interface: Int, timestamp: UInt64, data: UnsafeRawBufferPointer, snaplen: Int, dropped: Bool = false,
                      comment: (StaticString, String, StaticString, String)? = nil) -> Bool {
        guard interface >= 0 && interface < interfaceCount else { return false }
        seenCounts[interface] &+= 1
        let captured = min(data.count, snaplen)
        var commentLength = 0
        if let comment {
            commentLength = comment.0.utf8CodeUnitCount + comment.1.utf8.count + comment.2.utf8CodeUnitCount + comment.3.utf8.count
            commentLength = min(commentLength, 1024)
        }
        let length = (Self.headerSize + captured + commentLength + Self.align - 1) / Self.align * Self.align
        let h = head.load(ordering: .relaxed)
        let t = tail.load(ordering: .acquiring)
        let pos = h & mask
        let contiguous = capacity - pos
        let needed = length <= contiguous ? length : contiguous + length
        guard length <= capacity / 2, needed <= capacity - (h - t) else {
            lostCounts[interface] &+= 1
            return false
        }
        var at = h
        if length > contiguous {
            let f = buffer + pos
            f.storeBytes(of: UInt32(contiguous), as: UInt32.self)
            f.storeBytes(of: Self.filler, toByteOffset: 12, as: UInt16.self)
            at += contiguous
        }
        let r = buffer + (at & mask)
        r.storeBytes(of: UInt32(length), as: UInt32.self)
        r.storeBytes(of: UInt32(captured), toByteOffset: 4, as: UInt32.self)
        r.storeBytes(of: UInt32(data.count), toByteOffset: 8, as: UInt32.self)
        r.storeBytes(of: UInt16(interface), toByteOffset: 12, as: UInt16.self)
        r.storeBytes(of: UInt16(dropped ? 1 : 0), toByteOffset: 14, as: UInt16.self)
        r.storeBytes(of: timestamp, toByteOffset: 16, as: UInt64.self)
        r.storeBytes(of: UInt16(commentLength), toByteOffset: 24, as: UInt16.self)
        if captured > 0, let base = data.baseAddress { (r + Self.headerSize).copyMemory(from: base, byteCount: captured) }
        if let comment {
            var out = r + Self.headerSize + captured
            var room = commentLength
            func put(_ p: UnsafeRawBufferPointer) {
                let n = min(p.count, room)
                if n > 0, let b = p.baseAddress { out.copyMemory(from: b, byteCount: n) }
                out += n
                room -= n
            }
            put(UnsafeRawBufferPointer(start: comment.0.utf8Start, count: comment.0.utf8CodeUnitCount))
            var reason = comment.1
            reason.withUTF8 { put(UnsafeRawBufferPointer($0)) }
            put(UnsafeRawBufferPointer(start: comment.2.utf8Start, count: comment.2.utf8CodeUnitCount))
            var name = comment.3
            name.withUTF8 { put(UnsafeRawBufferPointer($0)) }
        }
        head.store(at + length, ordering: .releasing)
        return true
    }

    // MARK: - Consumer (a control connection)

    /// One frame as stored.
    public struct Record {
        public let interface: Int
        public let timestamp: UInt64
        public let data: UnsafeRawBufferPointer
        public let originalLength: Int
        public let dropped: Bool
        public let comment: UnsafeRawBufferPointer
    }

    /// Hands every stored frame to `body`, oldest first, until it returns false, then frees their
    /// room. Returns how many were handed over.
    @discardableResult
    public func drain(_ body: (Record) -> Bool) -> Int {
        let h = head.load(ordering: .acquiring)
        var t = tail.load(ordering: .relaxed)
        var n = 0
        while t < h {
            let r = buffer + (t & mask)
            let length = Int(r.load(as: UInt32.self))
            if r.load(fromByteOffset: 12, as: UInt16.self) == Self.filler {
                t += length
                continue
            }
            let captured = Int(r.load(fromByteOffset: 4, as: UInt32.self))
            let commentLength = Int(r.load(fromByteOffset: 24, as: UInt16.self))
            let record = Record(interface: Int(r.load(fromByteOffset: 12, as: UInt16.self)),
                                timestamp: r.load(fromByteOffset: 16, as: UInt64.self),
                                data: UnsafeRawBufferPointer(start: r + Self.headerSize, count: captured),
                                originalLength: Int(r.load(fromByteOffset: 8, as: UInt32.self)),
                                dropped: r.load(fromByteOffset: 14, as: UInt16.self) & 1 != 0,
                                comment: UnsafeRawBufferPointer(start: r + Self.headerSize + captured, count: commentLength))
            guard body(record) else { break }
            t += length
            n += 1
        }
        tail.store(t, ordering: .releasing)
        return n
    }

    /// Frames offered for `interface` so far (read after the producer stopped).
    public func seen(_ interface: Int) -> UInt64 { seenCounts[interface] }
    /// Frames lost for `interface` because the ring was full (read after the producer stopped).
    public func lost(_ interface: Int) -> UInt64 { lostCounts[interface] }
}
