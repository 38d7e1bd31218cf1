/// A destination of a frame, as in the Hyper-V forwarding context: a port/NIC, plus whether an
/// egress extension excluded it. Destinations are append-only and exclusion is one-way.
public struct Destination: Equatable, Sendable {
    public let port: PortID
    public let nic: NICIndex
    /// Dense index of the port in the switch's port table (saves a lookup on delivery).
    @usableFromInline let slot: UInt16
    public internal(set) var isExcluded: Bool
    /// The destination port's dense index (see ``VirtualSwitch/portIndex(of:)``).
    @inlinable public var portIndex: Int { Int(slot) }
}

/// A batch of frames in preallocated memory: the unit that travels through the extension stack.
///
/// Frames live in fixed slots of one slab allocated at start-up; per-frame metadata is kept in
/// parallel arrays (structure of arrays) so nothing is allocated or reference-counted per frame.
/// A batch is owned by one packet-loop queue (or one test) and is not thread-safe.
///
/// Slot layout: `headroom` bytes (room to push a VLAN tag or a virtio-net header in place), then
/// the frame, then at least `headroom` bytes of tailroom. The receive path writes the frame at
/// ``frameOffset`` in slot `i`. Extensions grow and shrink frames inside this room (see
/// ``IngressContext/adjustHead(_:by:)``); ``reservedHeadroom`` bytes always stay free for the
/// switch's own virtio-net header and delivery tag.
public final class FrameBatch {
    /// Room in front of every frame for pushed tags, an encapsulation header and the virtio-net header.
    public static let headroom = 128
    /// Headroom the switch keeps for itself: the virtio-net header written before the frame on
    /// transmit, plus one 802.1Q tag pushed on delivery to a trunk.
    public static let reservedHeadroom = 16
    /// Per-frame context words (one per extension, by stack position; see ``IngressContext/setFrameContext(_:_:)``).
    public static let contextSlots = 32

    public let capacity: Int
    public let slotSize: Int
    public let maxDestinations: Int
    /// Number of frames in the batch (received plus injected).
    public internal(set) var count: Int = 0

    @usableFromInline let slab: UnsafeMutableRawPointer
    @usableFromInline let start: UnsafeMutablePointer<Int32>
    @usableFromInline let length: UnsafeMutablePointer<Int32>
    @usableFromInline let vnet: UnsafeMutablePointer<VirtioNetHeader>
    @usableFromInline let hasVnet: UnsafeMutablePointer<Bool>
    @usableFromInline let sourcePort: UnsafeMutablePointer<PortID>
    @usableFromInline let sourceSlot: UnsafeMutablePointer<UInt16>
    @usableFromInline let sourceNIC: UnsafeMutablePointer<NICIndex>
    @usableFromInline let state: UnsafeMutablePointer<FrameState>
    @usableFromInline let entryLevel: UnsafeMutablePointer<Int16>
    @usableFromInline let headers: UnsafeMutablePointer<ParsedHeaders>
    @usableFromInline let destinations: UnsafeMutablePointer<Destination>
    @usableFromInline let destinationCount: UnsafeMutablePointer<UInt16>
    /// An extension changed the frame's bytes: the switch re-parses it after that extension.
    @usableFromInline let dirty: UnsafeMutablePointer<Bool>
    /// Some frame is dirty (saves the scan in the common case).
    @usableFromInline var anyDirty = false
    /// Bit k set: stack position k set its context word for the frame.
    @usableFromInline let contextMask: UnsafeMutablePointer<UInt32>
    @usableFromInline let contexts: UnsafeMutablePointer<UInt64>

    /// Offset of the frame inside a freshly received slot.
    public static var frameOffset: Int { headroom }

    /// - Parameters:
    ///   - capacity: frames per batch (the I/O batch budget).
    ///   - slotSize: bytes per slot, headroom included. Size it for 64 KiB GSO superframes on the
    ///     real data path; small values are fine in unit tests.
    ///   - maxDestinations: the most destinations one frame can have (the switch's port limit).
    public init(capacity: Int, slotSize: Int = 65_536 + 2 * FrameBatch.headroom, maxDestinations: Int) {
        precondition(capacity > 0 && capacity <= Int(Int16.max) && slotSize > Self.headroom + 64 && maxDestinations > 0)
        self.capacity = capacity
        self.slotSize = slotSize
        self.maxDestinations = maxDestinations
        slab = UnsafeMutableRawPointer.allocate(byteCount: capacity * slotSize, alignment: 64)
        start = .allocate(capacity: capacity)
        length = .allocate(capacity: capacity)
        vnet = .allocate(capacity: capacity)
        hasVnet = .allocate(capacity: capacity)
        sourcePort = .allocate(capacity: capacity)
        sourceSlot = .allocate(capacity: capacity)
        sourceNIC = .allocate(capacity: capacity)
        state = .allocate(capacity: capacity)
        entryLevel = .allocate(capacity: capacity)
        headers = .allocate(capacity: capacity)
        destinations = .allocate(capacity: capacity * maxDestinations)
        destinationCount = .allocate(capacity: capacity)
        dirty = .allocate(capacity: capacity)
        contextMask = .allocate(capacity: capacity)
        contexts = .allocate(capacity: capacity * Self.contextSlots)
        start.initialize(repeating: Int32(Self.headroom), count: capacity)
        length.initialize(repeating: 0, count: capacity)
        vnet.initialize(repeating: VirtioNetHeader(), count: capacity)
        hasVnet.initialize(repeating: false, count: capacity)
        sourcePort.initialize(repeating: .switchItself, count: capacity)
        sourceSlot.initialize(repeating: UInt16.max, count: capacity)
        sourceNIC.initialize(repeating: 0, count: capacity)
        state.initialize(repeating: .free, count: capacity)
        entryLevel.initialize(repeating: 0, count: capacity)
        headers.initialize(repeating: ParsedHeaders(), count: capacity)
        destinations.initialize(
            repeating: Destination(port: .switchItself, nic: 0, slot: 0, isExcluded: false),
            count: capacity * maxDestinations)
        destinationCount.initialize(repeating: 0, count: capacity)
        dirty.initialize(repeating: false, count: capacity)
        contextMask.initialize(repeating: 0, count: capacity)
        contexts.initialize(repeating: 0, count: capacity * Self.contextSlots)
    }

    deinit {
        slab.deallocate()
        start.deallocate(); length.deallocate(); vnet.deallocate(); hasVnet.deallocate()
        sourcePort.deallocate(); sourceSlot.deallocate(); sourceNIC.deallocate(); state.deallocate()
        entryLevel.deallocate(); headers.deallocate(); destinations.deallocate(); destinationCount.deallocate()
        dirty.deallocate(); contextMask.deallocate(); contexts.deallocate()
    }

    // MARK: - Filling the batch (receive path)

    /// Empties the batch. Slot memory is reused as is.
    public func reset() {
        count = 0
        anyDirty = false
    }

    /// Base of slot `i`'s memory (headroom included). Stable for the batch's lifetime, so I/O
    /// vectors can point at it once at start-up.
    @inlinable public func slotBase(_ i: Int) -> UnsafeMutableRawPointer { slab + i * slotSize }

    /// Records that slot `count` now holds a frame of `length` bytes at ``frameOffset``, received
    /// from `port`, and returns its index. `vlanTag` is a tag the kernel stripped into auxdata: it is
    /// put back into the frame. Returns nil when the batch is full.
    @discardableResult
    public func commitReceived(
        length frameLength: Int, vnetHeader: VirtioNetHeader?, vlanTag: UInt16? = nil, vlanTPID: UInt16 = 0x8100
    ) -> Int? {
        guard count < capacity else { return nil }
        let i = count
        count += 1
        start[i] = Int32(Self.headroom)
        length[i] = Int32(frameLength)
        if let h = vnetHeader { vnet[i] = h; hasVnet[i] = true } else { hasVnet[i] = false }
        state[i] = .live
        entryLevel[i] = 0
        destinationCount[i] = 0
        dirty[i] = false
        contextMask[i] = 0
        if let tag = vlanTag { insertVLANTag(i, tci: tag, tpid: vlanTPID) }
        return i
    }

    /// Copies `bytes` into the next free slot. Used by tests, injection and cloning.
    @discardableResult
    public func append(_ bytes: UnsafeRawBufferPointer, vnetHeader: VirtioNetHeader? = nil) -> Int? {
        guard count < capacity, bytes.count <= slotSize - 2 * Self.headroom else { return nil }
        if let base = bytes.baseAddress {
            (slotBase(count) + Self.headroom).copyMemory(from: base, byteCount: bytes.count)
        }
        return commitReceived(length: bytes.count, vnetHeader: vnetHeader)
    }

    @discardableResult
    public func append(_ bytes: [UInt8], vnetHeader: VirtioNetHeader? = nil) -> Int? {
        bytes.withUnsafeBytes { append($0, vnetHeader: vnetHeader) }
    }

    // MARK: - Reading frames

    /// Pointer to the first byte of frame `i` (its Ethernet header).
    @inlinable public func frame(_ i: Int) -> UnsafeMutableRawPointer { slab + i * slotSize + Int(start[i]) }
    @inlinable public func length(_ i: Int) -> Int { Int(length[i]) }
    @inlinable public func bytes(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: frame(i), count: length(i))
    }
    /// Copy of frame `i`'s bytes (tests and slow paths only: it allocates).
    public func copyBytes(_ i: Int) -> [UInt8] { Array(bytes(i)) }
    @inlinable public func virtioHeader(_ i: Int) -> VirtioNetHeader? { hasVnet[i] ? vnet[i] : nil }
    @inlinable public func source(_ i: Int) -> PortID { sourcePort[i] }
    @inlinable public func sourceNICIndex(_ i: Int) -> NICIndex { sourceNIC[i] }
    /// Dense index of frame `i`'s source port (see ``VirtualSwitch/portIndex(of:)``); -1 for frames
    /// from the switch itself.
    @inlinable public func sourcePortIndex(_ i: Int) -> Int {
        let s = sourceSlot[i]
        return s == UInt16.max ? -1 : Int(s)
    }
    /// True for frames injected by the switch or an extension with port 0 as source (trusted).
    @inlinable public func isTrusted(_ i: Int) -> Bool { sourcePort[i] == .switchItself }
    @inlinable public func isDropped(_ i: Int) -> Bool { state[i] != .live }
    @inlinable public func parsed(_ i: Int) -> ParsedHeaders { headers[i] }

    /// Bytes free in front of frame `i` for an extension to grow it (``reservedHeadroom`` excluded).
    @inlinable public func headroom(_ i: Int) -> Int { max(0, Int(start[i]) - Self.reservedHeadroom) }
    /// Bytes free after frame `i` in its slot.
    @inlinable public func tailroom(_ i: Int) -> Int { slotSize - Int(start[i]) - Int(length[i]) }

    /// The destinations the forwarding step gave frame `i` (excluded ones included).
    @inlinable public func destinations(_ i: Int) -> UnsafeBufferPointer<Destination> {
        UnsafeBufferPointer(start: destinations + i * maxDestinations, count: Int(destinationCount[i]))
    }

    // MARK: - In-place edits

    /// Pushes an 802.1Q tag after the MAC addresses, using the headroom (no copy of the payload).
    @usableFromInline func insertVLANTag(_ i: Int, tci: UInt16, tpid: UInt16 = 0x8100) {
        guard start[i] >= 4, length[i] >= 12 else { return }
        let old = frame(i)
        let new = old - 4
        new.copyMemory(from: old, byteCount: 12)
        new.storeBytes(of: tpid.bigEndian, toByteOffset: 12, as: UInt16.self)
        new.storeBytes(of: tci.bigEndian, toByteOffset: 14, as: UInt16.self)
        start[i] -= 4
        length[i] += 4
        if hasVnet[i] { vnet[i].shift(by: 4) }
    }

    /// Moves the start of frame `i` by `delta` bytes: positive grows it at the front (the new bytes
    /// are uninitialised headroom the caller fills), negative removes bytes from the front. The
    /// virtio-net header's offsets move with the payload. False, changing nothing, when the room
    /// (``headroom(_:)``) or the frame is too small.
    @usableFromInline func moveHead(_ i: Int, by delta: Int) -> Bool {
        if delta >= 0 {
            guard delta <= headroom(i) else { return false }
        } else {
            guard -delta <= Int(length[i]) else { return false }
        }
        start[i] -= Int32(delta)
        length[i] += Int32(delta)
        if hasVnet[i] { vnet[i].shift(by: delta) }
        return true
    }

    /// Grows (positive) or shrinks (negative) frame `i` at its end.
    @usableFromInline func moveTail(_ i: Int, by delta: Int) -> Bool {
        if delta >= 0 {
            guard delta <= tailroom(i) else { return false }
        } else {
            guard -delta <= Int(length[i]) else { return false }
        }
        length[i] += Int32(delta)
        return true
    }

    @usableFromInline func storeMAC(_ mac: MACAddress, at offset: Int, in i: Int) {
        let p = frame(i) + offset
        for k in 0..<6 { p.storeBytes(of: UInt8(truncatingIfNeeded: mac.rawValue >> (40 - 8 * UInt64(k))), toByteOffset: k, as: UInt8.self) }
    }

    @inlinable func markDirty(_ i: Int) {
        dirty[i] = true
        anyDirty = true
    }

    @inlinable func context(_ i: Int, _ k: Int) -> UInt64? {
        guard k < Self.contextSlots, contextMask[i] & (1 << UInt32(k)) != 0 else { return nil }
        return contexts[i * Self.contextSlots + k]
    }

    @inlinable func setContext(_ i: Int, _ k: Int, _ value: UInt64) {
        contexts[i * Self.contextSlots + k] = value
        contextMask[i] |= 1 << UInt32(k)
    }

    /// Removes the outer 802.1Q tag in place (frame must have one).
    @usableFromInline func removeVLANTag(_ i: Int) {
        guard length[i] >= 18 else { return }
        let old = frame(i)
        (old + 4).copyMemory(from: old, byteCount: 12)
        start[i] += 4
        length[i] -= 4
        if hasVnet[i] { vnet[i].shift(by: -4) }
    }
}

/// Life of a frame within a batch.
public enum FrameState: UInt8, Sendable {
    case free
    /// Travelling through the stack.
    case live
    /// Dropped by the switch or an extension (already counted and reported).
    case dropped
    /// Taken out of the batch by an extension (pended); the extension now owns its completion.
    case pended
}
