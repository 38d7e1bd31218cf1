import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// Outcome of one batched receive.
public enum IOResult: Sendable, Equatable {
    /// This many slots (from slot 0) were filled.
    case done(Int)
    /// Nothing was pending (`EAGAIN`).
    case wouldBlock
    /// The call failed with this errno before receiving anything (`ENETDOWN` after the interface vanished...).
    case failed(Int32)
}

/// Why the kernel refused a send, in the terms a forwarder acts on.
public enum SendRefusal: Sendable, Equatable {
    /// `ENOBUFS` (the TAP queue is full, or nobody is attached, under qdisc bypass).
    case noBuffers
    /// `EAGAIN` (a full socket send buffer or TUN queue).
    case wouldBlock
    /// `ENETDOWN`, `ENXIO`, `ENODEV`: the device went down or away under the socket.
    case deviceGone
    /// `EMSGSIZE`: this one frame is longer than the device's MTU allows (and not a GSO frame).
    case frameTooLarge
    /// Anything else.
    case other

    public init(errno code: Int32) {
        switch code {
        case ENOBUFS: self = .noBuffers
        case EMSGSIZE: self = .frameTooLarge
        case EAGAIN: self = .wouldBlock
        case ENETDOWN, ENXIO, ENODEV: self = .deviceGone
        default: self = .other
        }
    }
}

/// Outcome of one batched send.
public enum SendResult: Sendable, Equatable {
    /// Every queued message went out.
    case sent(Int)
    /// `sent` messages went out, then the kernel refused the next with `errno` (`ENOBUFS` = the TAP queue is
    /// full or nobody is attached, under qdisc bypass). Drop the rest of the batch rather than retrying.
    case failed(sent: Int, errno: Int32)
}

/// Receives a batch of frames with one `recvmmsg` (sockets) or a series of `read`s (TUN/TAP fds) into
/// caller-owned buffers.
///
/// All bookkeeping (`mmsghdr`, `iovec`, control and address buffers) is allocated in `init`; receiving
/// allocates nothing. The frame buffers belong to the caller: ``setBuffer(_:base:length:)`` records a pointer
/// that must stay valid for the life of the vector (or until the slot is set again). With
/// `PACKET_VNET_HDR` (or a TAP fd opened with `IFF_VNET_HDR`) each slot starts with the 10-byte
/// `virtio_net_hdr`, followed by the frame. Size buffers for 64 KiB + header: GSO superframes are that big.
///
/// ## Concurrency model
/// Not `Sendable`. Confine it, its buffers and the fd it reads to one serial queue (a packet-loop worker).
public final class ReceiveVector {
    /// Number of slots.
    public let capacity: Int
    private let messages: UnsafeMutablePointer<ts_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_ll>
    private let control: UnsafeMutableRawPointer
    private let controlStride: Int

    /// Allocates bookkeeping for `capacity` slots (each still needs ``setBuffer(_:base:length:)``).
    public init(capacity: Int) {
        precondition(capacity > 0, "ReceiveVector capacity must be positive")
        self.capacity = capacity
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: ts_mmsghdr(), count: capacity)
        iovecs = .allocate(capacity: capacity)
        iovecs.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: capacity)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_ll(), count: capacity)
        // Room for tpacket_auxdata, rounded up generously in case the kernel adds another control message.
        controlStride = (ts_cmsg_space(MemoryLayout<tpacket_auxdata>.size) + 63) & ~63
        control = .allocate(byteCount: controlStride * capacity, alignment: 16)
        control.initializeMemory(as: UInt8.self, repeating: 0, count: controlStride * capacity)
        for i in 0..<capacity {
            messages[i].msg_hdr.msg_iov = iovecs + i
            messages[i].msg_hdr.msg_iovlen = 1
            messages[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_ll>.size)
            messages[i].msg_hdr.msg_control = control + i * controlStride
            messages[i].msg_hdr.msg_controllen = controlStride
        }
    }

    deinit {
        messages.deallocate()
        iovecs.deallocate()
        addresses.deallocate()
        control.deallocate()
    }

    /// Points slot `i` at `length` bytes of caller-owned memory at `base`.
    public func setBuffer(_ i: Int, base: UnsafeMutableRawPointer, length: Int) {
        precondition(i >= 0 && i < capacity, "slot \(i) out of range 0..<\(capacity)")
        iovecs[i] = iovec(iov_base: base, iov_len: length)
    }

    /// One non-blocking `recvmmsg` on `socket` into slots `0..<min(max, capacity)`. Retries `EINTR`.
    @inline(__always)
    public func receive(from socket: PacketSocket, max: Int) -> IOResult {
        receive(socket.fileDescriptor, first: 0, count: Swift.min(max, capacity))
    }

    /// One non-blocking receive of a single datagram from `socket` into slot `i` (see ``receive(from:slot:)``).
    @inline(__always)
    public func receive(from socket: PacketSocket, slot i: Int) -> IOResult {
        receive(from: socket.fileDescriptor, slot: i)
    }

    /// ``read(from:max:)`` on an owned TAP queue.
    @inline(__always)
    public func read(from queue: TunQueue, max: Int) -> IOResult {
        read(from: queue.fileDescriptor, max: max)
    }

    /// One non-blocking `recvmmsg` into slots `0..<min(max, capacity)`. Retries `EINTR`.
    public func receive(from fd: Int32, max: Int) -> IOResult {
        receive(fd, first: 0, count: Swift.min(max, capacity))
    }

    /// One non-blocking receive of a single datagram into slot `i` (the slot's length, flags and auxdata
    /// then read as after ``receive(from:max:)``). Used for a frame a ``ReceiveRing`` could not hold
    /// (``ReceiveRing/isCopied``). Retries `EINTR`.
    public func receive(from fd: Int32, slot i: Int) -> IOResult {
        precondition(i >= 0 && i < capacity, "slot \(i) out of range 0..<\(capacity)")
        return receive(fd, first: i, count: 1)
    }

    /// `recvmmsg` into slots `first..<first + count`.
    private func receive(_ fd: Int32, first: Int, count: Int) -> IOResult {
        for i in first..<first + count {
            // The kernel overwrites these on every call.
            messages[i].msg_hdr.msg_controllen = controlStride
            messages[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_ll>.size)
        }
        while true {
            let received = ts_recvmmsg(fd, messages + first, UInt32(count), Int32(MSG_DONTWAIT), nil)
            if received >= 0 { return .done(Int(received)) }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN { return .wouldBlock }
            return .failed(code)
        }
    }

    /// Fills slots with one `read` each from a TUN/TAP fd (not a socket, so no `recvmmsg`) until `EAGAIN`
    /// or `min(max, capacity)` frames. The fd must be non-blocking. A failure after some frames reports
    /// those frames; the error recurs on the next call.
    public func read(from tunFD: Int32, max: Int) -> IOResult {
        let count = Swift.min(max, capacity)
        var filled = 0
        while filled < count {
            let n = Glibc.read(tunFD, iovecs[filled].iov_base, iovecs[filled].iov_len)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if filled > 0 { break }
                return code == EAGAIN ? .wouldBlock : .failed(code)
            }
            messages[filled].msg_len = UInt32(n)
            messages[filled].msg_hdr.msg_flags = 0
            messages[filled].msg_hdr.msg_controllen = 0
            messages[filled].msg_hdr.msg_namelen = 0
            filled += 1
        }
        return .done(filled)
    }

    /// Bytes received into slot `i` (vnet header included when enabled).
    @inline(__always)
    public func length(_ i: Int) -> Int { Int(messages[i].msg_len) }

    /// True if slot `i`'s datagram was larger than its buffer (`MSG_TRUNC`). Always false after ``read(from:max:)``.
    @inline(__always)
    public func isTruncated(_ i: Int) -> Bool { messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The `sll_pkttype` of slot `i` (`PACKET_HOST`, `PACKET_OUTGOING`, ...), or nil after ``read(from:max:)``.
    public func packetType(_ i: Int) -> UInt8? {
        messages[i].msg_hdr.msg_namelen == 0 ? nil : addresses[i].sll_pkttype
    }

    /// The 802.1Q tag control information the kernel stripped from slot `i`'s frame, from `PACKET_AUXDATA`
    /// when `TP_STATUS_VLAN_VALID`; nil if the frame was untagged or auxdata is off. Put it back before
    /// forwarding, or VLAN traffic breaks.
    public func vlanTCI(_ i: Int) -> UInt16? {
        guard let aux = auxData(i), aux.tp_status & UInt32(TP_STATUS_VLAN_VALID) != 0 else { return nil }
        return aux.tp_vlan_tci
    }

    /// The TPID of the stripped tag (0x8100, or 0x88a8 for 802.1ad); nil when ``vlanTCI(_:)`` is nil.
    public func vlanTPID(_ i: Int) -> UInt16? {
        guard let aux = auxData(i), aux.tp_status & UInt32(TP_STATUS_VLAN_VALID) != 0 else { return nil }
        // Kernels before 3.14 did not report the TPID; 802.1Q is the only possibility there.
        return aux.tp_status & UInt32(TP_STATUS_VLAN_TPID_VALID) != 0 ? aux.tp_vlan_tpid : 0x8100
    }

    private func auxData(_ i: Int) -> tpacket_auxdata? {
        let header = UnsafeMutableRawPointer(messages + i).assumingMemoryBound(to: msghdr.self)
        var cmsg = ts_cmsg_firsthdr(header)
        while let current = cmsg {
            if current.pointee.cmsg_level == SOL_PACKET && current.pointee.cmsg_type == PACKET_AUXDATA {
                return UnsafeRawPointer(ts_cmsg_data(current)).loadUnaligned(as: tpacket_auxdata.self)
            }
            cmsg = ts_cmsg_nxthdr(header, current)
        }
        return nil
    }
}

/// Queues frames (each optionally preceded by a virtio-net header) and sends them with one `sendmmsg`
/// (sockets) or one `writev` each (TUN/TAP fds).
///
/// All bookkeeping is allocated in `init`; appending and sending allocate nothing. The vector stores only
/// pointers: the header and frame memory must stay valid and unchanged until the send returns. Messages go to
/// the interface the socket is bound to (no address).
///
/// ## Concurrency model
/// Not `Sendable`. Confine it to one serial queue, like the ``ReceiveVector`` it is usually paired with.
public final class SendVector {
    /// Maximum number of queued messages.
    public let capacity: Int
    /// Number of queued messages.
    public private(set) var count = 0
    private let messages: UnsafeMutablePointer<ts_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>

    public init(capacity: Int) {
        precondition(capacity > 0, "SendVector capacity must be positive")
        self.capacity = capacity
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: ts_mmsghdr(), count: capacity)
        iovecs = .allocate(capacity: 2 * capacity)
        iovecs.initialize(repeating: iovec(iov_base: nil, iov_len: 0), count: 2 * capacity)
    }

    deinit {
        messages.deallocate()
        iovecs.deallocate()
    }

    /// Forgets every queued message.
    @inline(__always)
    public func reset() { count = 0 }

    /// Queues one message: `header` (the virtio-net header, or nil/0 for none) then `frame`.
    /// - Returns: false if the vector is full.
    public func append(header: UnsafeRawPointer?, headerLength: Int, frame: UnsafeRawPointer, frameLength: Int) -> Bool {
        if count == capacity { return false }
        let slot = iovecs + 2 * count
        let message = messages + count
        if let header, headerLength > 0 {
            slot[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header), iov_len: headerLength)
            slot[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: frame), iov_len: frameLength)
            message.pointee.msg_hdr.msg_iov = slot
            message.pointee.msg_hdr.msg_iovlen = 2
        } else {
            slot[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: frame), iov_len: frameLength)
            message.pointee.msg_hdr.msg_iov = slot + 1
            message.pointee.msg_hdr.msg_iovlen = 1
        }
        count += 1
        return true
    }

    /// ``send(to:)-(Int32)`` on an owned socket.
    @inline(__always)
    public func send(to socket: PacketSocket) -> SendResult { send(to: socket.fileDescriptor) }

    /// ``write(to:)-(Int32)`` on an owned TAP queue.
    @inline(__always)
    public func write(to queue: TunQueue) -> SendResult { write(to: queue.fileDescriptor) }

    /// Sends the queued messages with `sendmmsg` (repeated if the kernel takes only part), retrying `EINTR`.
    /// Stops at the first refusal and reports how many went. Does not reset the vector.
    public func send(to fd: Int32) -> SendResult {
        var sent = 0
        while sent < count {
            let result = ts_sendmmsg(fd, messages + sent, UInt32(count - sent), Int32(MSG_DONTWAIT))
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                return .failed(sent: sent, errno: code)
            }
            sent += Int(result)
        }
        return .sent(sent)
    }

    /// Writes each queued message with one `writev` to a TUN/TAP fd (not a socket), retrying `EINTR`.
    /// Stops at the first failure and reports how many went. Does not reset the vector.
    public func write(to tunFD: Int32) -> SendResult {
        var sent = 0
        while sent < count {
            let header = messages[sent].msg_hdr
            let result = writev(tunFD, header.msg_iov, Int32(header.msg_iovlen))
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                return .failed(sent: sent, errno: code)
            }
            sent += 1
        }
        return .sent(sent)
    }
}
