import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// An `AF_PACKET`/`SOCK_RAW` socket for all protocols (`ETH_P_ALL`) bound to one interface, non-blocking.
///
/// This is how the switch moves frames on a TAP's kernel side: what the VM writes to its queue fd arrives
/// here, and what is sent here is queued for the VM to read. The socket owns its fd and closes it in ``close()``
/// or `deinit` unless ``release()`` hands it on. Needs `CAP_NET_RAW`.
///
/// ## Concurrency model
/// Not `Sendable`: confine it (and any ``ReceiveRing`` mapped on it) to one serial queue.
public final class PacketSocket {
    /// Socket options applied before binding.
    public struct Options: Sendable, Equatable {
        /// `PACKET_VNET_HDR`: every frame read or written starts with a 10-byte `struct virtio_net_hdr`, which
        /// carries GSO/TSO superframes and partial checksums through unchanged. Needed for guest TCP with
        /// default QEMU offloads.
        public var vnetHeader: Bool
        /// `PACKET_AUXDATA`: deliver `tpacket_auxdata`, which holds the 802.1Q tag the kernel stripped from the
        /// frame (see ``ReceiveVector/vlanTCI(_:)``).
        public var auxData: Bool
        /// `PACKET_IGNORE_OUTGOING`: do not see this socket's (or anyone's) transmissions on the interface;
        /// without it the switch loops its own sends back.
        public var ignoreOutgoing: Bool
        /// `PACKET_QDISC_BYPASS`: send straight to the driver. A full TAP queue (or no reader attached) then
        /// fails with `ENOBUFS` instead of a silent drop, which is the only per-frame backpressure signal.
        public var qdiscBypass: Bool
        /// `SO_RCVBUF` in bytes (`SO_RCVBUFFORCE` is tried first, so root may exceed `rmem_max`); nil keeps the default.
        public var receiveBuffer: Int?
        /// `SO_SNDBUF` in bytes (`SO_SNDBUFFORCE` tried first); nil keeps the default.
        public var sendBuffer: Int?
        /// A `TPACKET_V2` `PACKET_RX_RING` of this geometry, set up before `bind` so no frame ever waits in the
        /// plain receive queue ahead of the ring. Map it with ``ReceiveRing/init(fileDescriptor:geometry:interfaceName:)``.
        /// nil (the default) receives through `recvmmsg` only.
        public var receiveRing: ReceiveRing.Geometry?
        /// false: bind with protocol 0, so the socket never receives (a transmit-only socket costs the
        /// receive path nothing and has nobody waiting on it).
        public var receives: Bool
        /// Drop IPv4/IPv6 UDP frames longer than this many bytes before they reach the socket (see
        /// ``PacketSocket/limitUDPFrames(to:)``); nil keeps them.
        public var udpFrameLimit: Int?

        public init(vnetHeader: Bool = true, auxData: Bool = true, ignoreOutgoing: Bool = true, qdiscBypass: Bool = true,
                    receiveBuffer: Int? = nil, sendBuffer: Int? = nil, receiveRing: ReceiveRing.Geometry? = nil,
                    receives: Bool = true, udpFrameLimit: Int? = nil) {
            self.vnetHeader = vnetHeader
            self.auxData = auxData
            self.ignoreOutgoing = ignoreOutgoing
            self.qdiscBypass = qdiscBypass
            self.receiveBuffer = receiveBuffer
            self.sendBuffer = sendBuffer
            self.receiveRing = receiveRing
            self.receives = receives
            self.udpFrameLimit = udpFrameLimit
        }
    }

    /// The socket's fd, owned by this value (-1 once closed or released). For LinuxNet and its tests:
    /// other modules use the socket's methods and ``pollHandle``.
    public private(set) var fileDescriptor: Int32
    /// The interface the socket is bound to, for error messages.
    public let interfaceName: String

    /// Opens the socket, applies `options` and binds it to `interfaceIndex`.
    ///
    /// The socket is created with protocol 0 (receives nothing) and only starts receiving at `bind`, so no
    /// frames from other interfaces slip in between `socket` and `bind`.
    /// - Parameter interfaceName: used in error messages only.
    /// - Throws: ``SystemError`` naming the failed step and the interface.
    public init(interfaceIndex: Int32, interfaceName: String, options: Options) throws {
        let fd = try systemCall("socket(AF_PACKET)", device: interfaceName) {
            socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            func enable(_ option: Int32, _ name: String) throws(SystemError) {
                try setIntOption(fd, level: SOL_PACKET, option: option, value: 1, name: name, device: interfaceName)
            }
            if options.vnetHeader { try enable(PACKET_VNET_HDR, "PACKET_VNET_HDR") }
            if options.auxData { try enable(PACKET_AUXDATA, "PACKET_AUXDATA") }
            if options.ignoreOutgoing { try enable(PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING") }
            if options.qdiscBypass { try enable(PACKET_QDISC_BYPASS, "PACKET_QDISC_BYPASS") }
            if let size = options.receiveBuffer {
                try setBufferSize(fd, force: SO_RCVBUFFORCE, plain: SO_RCVBUF, size: size, name: "SO_RCVBUF", device: interfaceName)
            }
            if let size = options.sendBuffer {
                try setBufferSize(fd, force: SO_SNDBUFFORCE, plain: SO_SNDBUF, size: size, name: "SO_SNDBUF", device: interfaceName)
            }
            if let limit = options.udpFrameLimit { try attachUDPLimit(fd, limit, device: interfaceName) }
            // Last: the kernel refuses PACKET_VNET_HDR and PACKET_VERSION with EBUSY once a ring exists.
            if let geometry = options.receiveRing { try setUpReceiveRing(fd, geometry: geometry, device: interfaceName) }
            var address = sockaddr_ll()
            address.sll_family = UInt16(AF_PACKET)
            address.sll_protocol = options.receives ? UInt16(ETH_P_ALL).bigEndian : 0
            address.sll_ifindex = interfaceIndex
            try systemCall("bind(AF_PACKET)", device: interfaceName) {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
                    }
                }
            }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        fileDescriptor = fd
        self.interfaceName = interfaceName
    }

    /// Takes over `fd`, an AF_PACKET socket a previous daemon process opened on `interfaceIndex`
    /// (see ``SocketHandOver``), with every option and any receive ring it had.
    /// - Throws: ``SystemError`` if `fd` is not an AF_PACKET socket bound to that interface; the fd is
    ///   closed then.
    public init(adopting fd: Int32, interfaceIndex: Int32, interfaceName: String) throws(SystemError) {
        var address = sockaddr_ll()
        var length = socklen_t(MemoryLayout<sockaddr_ll>.size)
        let r = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard r == 0, address.sll_family == UInt16(AF_PACKET), address.sll_ifindex == interfaceIndex else {
            let code = r == 0 ? EINVAL : errno
            _ = Glibc.close(fd)
            throw SystemError(operation: "adopt(AF_PACKET)", device: interfaceName, errno: code,
                              detail: r == 0 ? "the handed-over socket is not an AF_PACKET socket on ifindex \(interfaceIndex)" : nil)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        fileDescriptor = fd
        self.interfaceName = interfaceName
    }

    deinit { close() }

    /// Closes the socket. Idempotent; afterwards every call on it fails with `EBADF`.
    public func close() {
        guard fileDescriptor >= 0 else { return }
        _ = Glibc.close(fileDescriptor)
        fileDescriptor = -1
    }

    /// What an ``EventPoll`` watches for this socket (readable: frames or a pending error).
    public var pollHandle: PollHandle { PollHandle(descriptor: fileDescriptor) }

    /// Joins the interface in promiscuous mode (`PACKET_ADD_MEMBERSHIP`, `PACKET_MR_PROMISC`) for the
    /// socket's lifetime: an uplink must see frames for every VM's MAC, not only its own.
    public func addPromiscuousMembership(interfaceIndex: Int32) throws(SystemError) {
        var request = packet_mreq()
        request.mr_ifindex = interfaceIndex
        request.mr_type = UInt16(PACKET_MR_PROMISC)
        try systemCall("PACKET_ADD_MEMBERSHIP(PROMISC)", device: interfaceName) {
            setsockopt(fileDescriptor, Int32(SOL_PACKET), Int32(PACKET_ADD_MEMBERSHIP), &request,
                       socklen_t(MemoryLayout<packet_mreq>.size))
        }
    }

    /// The pending socket error (`SO_ERROR`), cleared by reading it; 0 if none. `ENETDOWN` after the
    /// interface was deleted under the socket.
    public func pendingError() -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fileDescriptor, SOL_SOCKET, SO_ERROR, &value, &length) != 0 { return errno }
        return value
    }

    /// Drops IPv4 and IPv6 UDP frames (untagged or with one 802.1Q/802.1ad tag in the frame) longer
    /// than `maxLength` bytes before they reach the socket, with a classic BPF filter
    /// (`SO_ATTACH_FILTER`, replacing any earlier one).
    ///
    /// Why: a guest can write a UDP fragmentation-offload (UFO) superframe (virtio-net `gso_type` 3).
    /// The kernel cannot describe it with a `virtio_net_hdr`, and on a `TPACKET_V2` ring with
    /// `PACKET_VNET_HDR` it drops it after claiming the ring slot without ever releasing it, so every
    /// later frame of that socket is dropped as "ring full" (seen on 6.18). A frame longer than the
    /// device's MTU plus the link header can only be such a superframe (or a USO one, which QEMU 7.2
    /// does not produce): set `maxLength` to MTU + 18. Frames the filter drops are not counted by
    /// ``statistics(interfaceName:)``.
    public func limitUDPFrames(to maxLength: Int) throws(SystemError) {
        try attachUDPLimit(fileDescriptor, maxLength, device: interfaceName)
    }

    /// Turns `PACKET_QDISC_BYPASS` on or off on the open socket (the kernel takes it at any time; it
    /// applies from the next send). Off: sends go through the qdisc, where packet taps
    /// (`tcpdump -i`) see them and a full TAP queue drops silently.
    public func setQdiscBypass(_ on: Bool) throws(SystemError) {
        try setIntOption(fileDescriptor, level: SOL_PACKET, option: PACKET_QDISC_BYPASS, value: on ? 1 : 0,
                         name: "PACKET_QDISC_BYPASS", device: interfaceName)
    }

    /// Whether `PACKET_QDISC_BYPASS` is on (nil when it cannot be read).
    public var qdiscBypass: Bool? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fileDescriptor, SOL_PACKET, PACKET_QDISC_BYPASS, &value, &length) == 0 else { return nil }
        return value != 0
    }

    /// Reads and resets the socket's `PACKET_STATISTICS` (see ``PacketStatistics``).
    public func statistics(interfaceName: String) throws(SystemError) -> PacketStatistics {
        try readPacketStatistics(fileDescriptor, device: interfaceName)
    }

    /// Gives up ownership: returns the fd without closing it (e.g. for a Dispatch source's cancel handler).
    public func release() -> Int32 {
        let fd = fileDescriptor
        fileDescriptor = -1
        return fd
    }
}

private func setIntOption(_ fd: Int32, level: Int32, option: Int32, value: Int32, name: String, device: String)
    throws(SystemError)
{
    var value = value
    try systemCall("setsockopt(\(name))", device: device) {
        setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<Int32>.size))
    }
}

private func setBufferSize(_ fd: Int32, force: Int32, plain: Int32, size: Int, name: String, device: String)
    throws(SystemError)
{
    var value = Int32(clamping: size)
    // The *FORCE variants need CAP_NET_ADMIN but may exceed net.core.[rw]mem_max.
    if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 { return }
    try setIntOption(fd, level: SOL_SOCKET, option: plain, value: value, name: name, device: device)
}

/// `PACKET_VERSION = TPACKET_V2`, `PACKET_COPY_THRESH = 1`, then `PACKET_RX_RING`, in the order the kernel needs.
private func setUpReceiveRing(_ fd: Int32, geometry: ReceiveRing.Geometry, device: String) throws(SystemError) {
    if let problem = geometry.problem {
        throw SystemError(operation: "PACKET_RX_RING", device: device, errno: EINVAL, detail: problem)
    }
    try setIntOption(fd, level: SOL_PACKET, option: PACKET_VERSION, value: Int32(TPACKET_V2.rawValue),
                     name: "PACKET_VERSION", device: device)
    // A frame larger than a slot is then also queued whole on the socket (TP_STATUS_COPY) instead of being
    // cut to the slot: GSO superframes reach 64 KiB, far beyond a 2 KiB slot.
    try setIntOption(fd, level: SOL_PACKET, option: PACKET_COPY_THRESH, value: 1, name: "PACKET_COPY_THRESH", device: device)
    var request = tpacket_req(
        tp_block_size: UInt32(geometry.blockSize), tp_block_nr: UInt32(geometry.blockCount),
        tp_frame_size: UInt32(geometry.frameSize), tp_frame_nr: UInt32(geometry.frameCount))
    try systemCall("setsockopt(PACKET_RX_RING)", device: device) {
        setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &request, socklen_t(MemoryLayout<tpacket_req>.size))
    }
}

/// Counters of one packet socket since the last read (reading resets them in the kernel).
public struct PacketStatistics: Sendable, Equatable {
    /// Frames handed to the socket (ring slot or receive queue).
    public var delivered: Int
    /// Frames dropped because the ring had no free slot or the receive buffer was full.
    public var dropped: Int

    public init(delivered: Int, dropped: Int) {
        self.delivered = delivered
        self.dropped = dropped
    }
}

func readPacketStatistics(_ fd: Int32, device: String) throws(SystemError) -> PacketStatistics {
    var stats = tpacket_stats()
    var length = socklen_t(MemoryLayout<tpacket_stats>.size)
    try systemCall("getsockopt(PACKET_STATISTICS)", device: device) {
        getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &stats, &length)
    }
    // The kernel's tp_packets already includes the drops.
    return PacketStatistics(delivered: Int(stats.tp_packets) - Int(stats.tp_drops), dropped: Int(stats.tp_drops))
}

/// The classic BPF program of ``PacketSocket/limitUDPFrames(to:)``: accept unless the frame is longer
/// than `maxLength` and carries IPv4 or IPv6 UDP (directly or behind one VLAN tag left in the frame;
/// the kernel has already moved the outer tag into metadata).
private func attachUDPLimit(_ fd: Int32, _ maxLength: Int, device: String) throws(SystemError) {
    func op(_ code: Int32, _ jt: UInt8, _ jf: UInt8, _ k: UInt32) -> sock_filter {
        sock_filter(code: UInt16(code), jt: jt, jf: jf, k: k)
    }
    let ldLen = BPF_LD | BPF_W | BPF_LEN, ldh = BPF_LD | BPF_H | BPF_ABS, ldb = BPF_LD | BPF_B | BPF_ABS
    let jgt = BPF_JMP | BPF_JGT | BPF_K, jeq = BPF_JMP | BPF_JEQ | BPF_K, ret = BPF_RET | BPF_K
    let udp: UInt32 = 17
    var program: [sock_filter] = [
        op(ldLen, 0, 0, 0),                         // 0  A = frame length
        op(jgt, 0, 17, UInt32(clamping: maxLength)), // 1  short enough: accept (19)
        op(ldh, 0, 0, 12),                          // 2  EtherType
        op(jeq, 3, 0, 0x0800),                      // 3  IPv4 -> 7
        op(jeq, 4, 0, 0x86DD),                      // 4  IPv6 -> 9
        op(jeq, 5, 0, 0x8100),                      // 5  tagged -> 11
        op(jeq, 4, 12, 0x88A8),                     // 6  tagged -> 11, else accept
        op(ldb, 0, 0, 23),                          // 7  IPv4 protocol
        op(jeq, 9, 10, udp),                        // 8  UDP -> drop (18), else accept
        op(ldb, 0, 0, 20),                          // 9  IPv6 next header
        op(jeq, 7, 8, udp),                         // 10
        op(ldh, 0, 0, 16),                          // 11 inner EtherType
        op(jeq, 1, 0, 0x0800),                      // 12 IPv4 -> 14
        op(jeq, 2, 5, 0x86DD),                      // 13 IPv6 -> 16, else accept
        op(ldb, 0, 0, 27),                          // 14 IPv4 protocol
        op(jeq, 2, 3, udp),                         // 15
        op(ldb, 0, 0, 24),                          // 16 IPv6 next header
        op(jeq, 0, 1, udp),                         // 17
        op(ret, 0, 0, 0),                           // 18 drop
        op(ret, 0, 0, 0xFFFF_FFFF),                 // 19 accept whole
    ]
    try program.withUnsafeMutableBufferPointer { instructions throws(SystemError) in
        var fprog = sock_fprog(len: UInt16(instructions.count), filter: instructions.baseAddress)
        try systemCall("setsockopt(SO_ATTACH_FILTER)", device: device) {
            setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, socklen_t(MemoryLayout<sock_fprog>.size))
        }
    }
}
