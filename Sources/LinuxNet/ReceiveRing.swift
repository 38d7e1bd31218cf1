import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// A mapped `TPACKET_V2` receive ring (`PACKET_RX_RING`) of an `AF_PACKET` socket: the kernel writes each
/// frame into a shared-memory slot, so the reader takes frames without a system call.
///
/// V2, not V3: a V3 ring wakes the reader per block or on a timer of at least 1 ms, which costs 1 ms of
/// latency at low load; V2 wakes per frame.
///
/// Create the socket with ``PacketSocket/Options/receiveRing`` set to the same ``Geometry``, then map it here.
/// Reading loop:
/// ```swift
/// while ring.next() {
///     if ring.isCopied { /* one recvmsg on the fd returns the whole frame; use that instead */ }
///     else { use(ring.frame, ring.frameLength, ring.vnetHeader, ring.vlanTCI) }
///     ring.release()
/// }
/// // then wait for POLLIN on the fd
/// ```
///
/// ## Waiting
/// The socket fd polls readable (`POLLIN`, epoll, a Dispatch read source) while the slot the kernel filled
/// last is still owned by user space, or while a copied frame (``isCopied``) waits in the receive queue.
/// Release every slot you have read, and receive every copied frame, before waiting, or the fd stays
/// readable and the reader spins.
///
/// ## Layout of a slot
/// `tpacket2_hdr` (32 bytes) at the slot start, the `sockaddr_ll` at `TPACKET_ALIGN(32)` = 32, then the frame
/// at `tp_mac`. The kernel puts the network header at `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80, plus the
/// vnet header size with `PACKET_VNET_HDR`; the 10-byte `virtio_net_hdr` sits immediately before the frame
/// (`tpacket_rcv` writes it at `tp_mac - 10`). For Ethernet: `tp_mac` = 76 with a vnet header (header at 66,
/// IP at 90, not 4-byte aligned: parse with unaligned loads), 66 without.
///
/// ## Concurrency model
/// Not `Sendable`. Confine it to one serial queue (a packet-loop worker), like ``ReceiveVector``. Mapped with
/// ``init(socket:geometry:)`` it keeps its ``PacketSocket`` alive; mapped from a bare fd it does not own it.
/// ``close()`` or `deinit` unmaps.
public final class ReceiveRing {
    /// Size and number of ring slots. Blocks (the kernel's allocation unit) are derived.
    public struct Geometry: Sendable, Equatable {
        /// Bytes per slot: header, address, vnet header, frame. A multiple of 16 (`TPACKET_ALIGNMENT`).
        /// The default 2048 holds a 1514-byte frame plus an 802.1Q tag's worth, the vnet header and the
        /// 76 bytes before the frame; larger frames (GSO superframes) arrive with ``ReceiveRing/isCopied``.
        public var frameSize: Int
        /// Number of slots; a multiple of ``framesPerBlock``.
        public var frameCount: Int

        /// The smallest slot accepted: the 76 bytes before an Ethernet frame with vnet header, plus a little frame.
        public static let minimumFrameSize = 128
        /// The system page size; blocks are multiples of it.
        public static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

        public init(frameSize: Int = 2048, frameCount: Int = 256) {
            self.frameSize = frameSize
            self.frameCount = frameCount
        }

        /// Bytes per block: the smallest multiple of the page size that holds one slot (the kernel requires
        /// page-multiple blocks; blocks bigger than needed only risk failing high-order allocations).
        public var blockSize: Int {
            let page = Self.pageSize
            return Swift.max(1, (frameSize + page - 1) / page) * page
        }

        /// Whole slots per block (the rest of a block is unused).
        public var framesPerBlock: Int { frameSize > 0 ? blockSize / frameSize : 0 }

        /// Number of blocks.
        public var blockCount: Int { framesPerBlock > 0 ? frameCount / framesPerBlock : 0 }

        /// Bytes mapped: `blockSize * blockCount`.
        public var mappedSize: Int { blockSize * blockCount }

        /// What is wrong with this geometry, or nil if the kernel will accept it.
        public var problem: String? {
            if frameSize < Self.minimumFrameSize {
                return "ring frameSize \(frameSize) is below the minimum of \(Self.minimumFrameSize) bytes"
            }
            if frameSize % Int(TPACKET_ALIGNMENT) != 0 {
                return "ring frameSize \(frameSize) is not a multiple of TPACKET_ALIGNMENT (\(TPACKET_ALIGNMENT))"
            }
            if frameSize > 1 << 30 { return "ring frameSize \(frameSize) is above 1 GiB" }
            if frameCount <= 0 { return "ring frameCount \(frameCount) must be positive" }
            if frameCount % framesPerBlock != 0 {
                return "ring frameCount \(frameCount) is not a multiple of \(framesPerBlock), the frames per \(blockSize)-byte block "
                    + "(frameSize \(frameSize), page size \(Self.pageSize))"
            }
            if blockCount > Int(UInt32.max) || mappedSize > 1 << 40 {
                return "ring of \(frameCount) frames of \(frameSize) bytes is too large"
            }
            return nil
        }
    }

    /// The geometry the ring was mapped with.
    public let geometry: Geometry
    /// Used in error messages only.
    public let interfaceName: String
    /// Whether the socket has `PACKET_VNET_HDR` (queried at init), i.e. whether ``vnetHeader`` is non-nil.
    public let hasVnetHeader: Bool
    /// Index of the current slot, `0..<frameCount`.
    public var position: Int { index }

    private let fd: Int32
    /// The socket the ring belongs to, when mapped with ``init(socket:geometry:)``.
    private let socket: PacketSocket?
    private var isMapped = true
    private let base: UnsafeMutableRawPointer
    /// Start of every slot: slots are not evenly spaced when a block has room left over.
    private let slots: UnsafeMutablePointer<UnsafeMutableRawPointer>
    private var current: UnsafeMutableRawPointer
    // Private, not `public private(set)`: a publicly visible var gets a dynamic exclusivity check per access.
    private var index = 0
    /// `tp_status` of the current slot as last loaded by ``next()``.
    private var status: UInt32 = 0
    /// Offset of `sll_pkttype` in a slot (the `sockaddr_ll` follows the aligned `tpacket2_hdr`).
    private let packetTypeOffset: Int

    /// Maps the ring of `fileDescriptor`, a socket set up with ``PacketSocket/Options/receiveRing`` = `geometry`.
    /// - Throws: ``SystemError`` if the geometry is invalid, the socket is not `TPACKET_V2`, or `mmap` fails
    ///   (`EINVAL` when the socket's ring has another size).
    public convenience init(fileDescriptor: Int32, geometry: Geometry, interfaceName: String) throws(SystemError) {
        try self.init(fd: fileDescriptor, socket: nil, geometry: geometry, interfaceName: interfaceName)
    }

    /// Maps the ring of `socket` (created with ``PacketSocket/Options/receiveRing`` = `geometry`) and keeps
    /// the socket alive as long as the ring.
    public convenience init(socket: PacketSocket, geometry: Geometry) throws(SystemError) {
        try self.init(fd: socket.fileDescriptor, socket: socket, geometry: geometry, interfaceName: socket.interfaceName)
    }

    private init(fd fileDescriptor: Int32, socket: PacketSocket?, geometry: Geometry, interfaceName: String) throws(SystemError) {
        if let problem = geometry.problem {
            throw SystemError(operation: "ReceiveRing", device: interfaceName, errno: EINVAL, detail: problem)
        }
        let version = try Self.intOption(fileDescriptor, PACKET_VERSION, "PACKET_VERSION", interfaceName)
        if version != Int32(TPACKET_V2.rawValue) {
            throw SystemError(operation: "ReceiveRing", device: interfaceName, errno: EINVAL,
                              detail: "the socket uses TPACKET version \(version + 1), not 2: create it with PacketSocket.Options.receiveRing")
        }
        hasVnetHeader = try Self.intOption(fileDescriptor, PACKET_VNET_HDR, "PACKET_VNET_HDR", interfaceName) != 0
        let mapped = mmap(nil, geometry.mappedSize, PROT_READ | PROT_WRITE, MAP_SHARED, fileDescriptor, 0)
        guard let mapped, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
            let code = errno
            throw SystemError(operation: "mmap(PACKET_RX_RING)", device: interfaceName, errno: code,
                              detail: code == EINVAL
                                  ? "the socket has no receive ring of \(geometry.mappedSize) bytes (\(geometry.frameCount) x \(geometry.frameSize))"
                                  : nil)
        }
        fd = fileDescriptor
        self.socket = socket
        base = mapped
        self.geometry = geometry
        self.interfaceName = interfaceName
        slots = .allocate(capacity: geometry.frameCount)
        for i in 0..<geometry.frameCount {
            let block = i / geometry.framesPerBlock
            let within = i % geometry.framesPerBlock
            (slots + i).initialize(to: mapped + block * geometry.blockSize + within * geometry.frameSize)
        }
        current = slots[0]
        packetTypeOffset = Int(TS_TPACKET2_SLL_OFFSET) + MemoryLayout<sockaddr_ll>.offset(of: \.sll_pkttype)!
    }

    deinit {
        close()
        slots.deallocate()
    }

    /// Unmaps the ring. Idempotent. Afterwards nothing may read it (``next()`` would touch unmapped memory).
    public func close() {
        guard isMapped else { return }
        isMapped = false
        munmap(base, geometry.mappedSize)
    }

    /// Finds where reading goes on in a ring mapped from a socket another process read before
    /// (a daemon restart): the oldest slot still owned by user space, or, when none is, the slot
    /// after the one the kernel filled last. The kernel fills slots in order and the old reader
    /// released them in order, so the user-owned slots are one run; the timestamps the kernel
    /// writes (and leaves behind on release) order them. Call once, before the first ``next()``.
    /// - Returns: the number of frames waiting.
    @discardableResult
    public func resumePosition() -> Int {
        let count = geometry.frameCount
        var waiting = 0
        var oldest: (index: Int, time: UInt64)?
        var newest: (index: Int, time: UInt64)?
        for i in 0..<count {
            let slot = slots[i]
            let status = ts_load_acquire_u32(slot.assumingMemoryBound(to: UInt32.self))
            // tp_sec, tp_nsec at 16 and 20 in tpacket2_hdr.
            let time = UInt64(slot.load(fromByteOffset: 16, as: UInt32.self)) * 1_000_000_000
                + UInt64(slot.load(fromByteOffset: 20, as: UInt32.self))
            if status & UInt32(TP_STATUS_USER) != 0 {
                waiting += 1
                if oldest == nil || time < oldest!.time { oldest = (i, time) }
            } else if time != 0, newest == nil || time >= newest!.time {
                newest = (i, time)
            }
        }
        if waiting > 0, waiting < count {
            // The run of user-owned slots starts right after a kernel-owned one.
            for i in 0..<count {
                let prev = slots[(i + count - 1) % count]
                let here = ts_load_acquire_u32(slots[i].assumingMemoryBound(to: UInt32.self)) & UInt32(TP_STATUS_USER) != 0
                let before = ts_load_acquire_u32(prev.assumingMemoryBound(to: UInt32.self)) & UInt32(TP_STATUS_USER) != 0
                if here && !before { index = i; break }
            }
        } else if let oldest {
            index = oldest.index
        } else if let newest {
            index = (newest.index + 1) % count
        } else {
            index = 0
        }
        current = slots[index]
        status = 0
        return waiting
    }

    // MARK: Hot path

    /// True if the current slot holds a frame for user space (`TP_STATUS_USER`, loaded with acquire
    /// semantics). Does not advance: read the slot, then ``release()``. Every accessor below is valid only
    /// while this last returned true and the slot is not yet released.
    @inline(__always)
    public func next() -> Bool {
        status = ts_load_acquire_u32(current.assumingMemoryBound(to: UInt32.self))
        return status & UInt32(TP_STATUS_USER) != 0
    }

    /// Hands the current slot back to the kernel (`TP_STATUS_KERNEL`, release store) and moves to the next
    /// slot, wrapping around.
    @inline(__always)
    public func release() {
        ts_store_release_u32(current.assumingMemoryBound(to: UInt32.self), UInt32(TP_STATUS_KERNEL))
        index += 1
        if index == geometry.frameCount { index = 0 }
        current = slots[index]
        status = 0
    }

    /// Offset of the frame inside its slot (`tp_mac`).
    @inline(__always)
    public var frameOffset: Int { Int(current.load(fromByteOffset: 12, as: UInt16.self)) }

    /// The frame (Ethernet header first; an 802.1Q tag is stripped into ``vlanTCI``).
    @inline(__always)
    public var frame: UnsafeRawPointer { UnsafeRawPointer(current + frameOffset) }

    /// Bytes of the frame in the slot (`tp_snaplen`); less than ``originalLength`` when the frame did not fit.
    @inline(__always)
    public var frameLength: Int { Int(current.load(fromByteOffset: 8, as: UInt32.self)) }

    /// Length of the frame on the wire (`tp_len`).
    @inline(__always)
    public var originalLength: Int { Int(current.load(fromByteOffset: 4, as: UInt32.self)) }

    /// The 10-byte `virtio_net_hdr` just before the frame, or nil if the socket has no `PACKET_VNET_HDR`.
    @inline(__always)
    public var vnetHeader: UnsafeRawPointer? { hasVnetHeader ? UnsafeRawPointer(current + frameOffset - 10) : nil }

    /// `TP_STATUS_COPY`: the frame was larger than a slot. The slot holds only its first ``frameLength``
    /// bytes; the whole frame, with its vnet header, waits in the socket's receive queue. Read it with one
    /// `recvmsg` (``ReceiveVector/receive(from:max:)`` with `max: 1`) before or after releasing this slot,
    /// and before reading the next copied slot, or the two get out of step.
    @inline(__always)
    public var isCopied: Bool { status & UInt32(TP_STATUS_COPY) != 0 }

    /// The frame was cut to the slot and NOT copied (the receive buffer was full): it is lost; count and
    /// skip it.
    @inline(__always)
    public var isTruncated: Bool { !isCopied && frameLength < originalLength }

    /// The 802.1Q tag control information stripped from the frame (`TP_STATUS_VLAN_VALID`), nil if the frame
    /// was untagged. Same meaning as ``ReceiveVector/vlanTCI(_:)``: put it back before forwarding.
    @inline(__always)
    public var vlanTCI: UInt16? {
        status & UInt32(TP_STATUS_VLAN_VALID) != 0 ? current.load(fromByteOffset: 24, as: UInt16.self) : nil
    }

    /// The TPID of the stripped tag (0x8100, or 0x88a8 for 802.1ad); nil when ``vlanTCI`` is nil.
    @inline(__always)
    public var vlanTPID: UInt16? {
        guard status & UInt32(TP_STATUS_VLAN_VALID) != 0 else { return nil }
        return status & UInt32(TP_STATUS_VLAN_TPID_VALID) != 0 ? current.load(fromByteOffset: 26, as: UInt16.self) : 0x8100
    }

    /// `sll_pkttype` of the frame (`PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST`, `PACKET_OTHERHOST`).
    @inline(__always)
    public var packetType: UInt8 {
        current.load(fromByteOffset: packetTypeOffset, as: UInt8.self)
    }

    // MARK: Counters

    /// Reads and resets the socket's `PACKET_STATISTICS`: frames delivered and frames dropped (ring full)
    /// since the last read. For counters, not the hot path (one system call).
    public func statistics() throws(SystemError) -> PacketStatistics {
        try readPacketStatistics(fd, device: interfaceName)
    }

    private static func intOption(_ fd: Int32, _ option: Int32, _ name: String, _ device: String) throws(SystemError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try systemCall("getsockopt(\(name))", device: device) { getsockopt(fd, SOL_PACKET, option, &value, &length) }
        return value
    }
}
