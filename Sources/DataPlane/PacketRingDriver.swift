import Dispatch
import LinuxNet
import SwitchCore

/// The driver of a VM TAP or an uplink: the device's kernel side through AF_PACKET.
///
/// Receive: a `TPACKET_V2` ring (``ringGeometry``), no system call per frame; a frame larger than a
/// slot (a TSO/GSO superframe) is also queued whole on the socket (`PACKET_COPY_THRESH`) and read
/// with one `recvmmsg`; stripped 802.1Q tags are put back from the ring or `PACKET_AUXDATA`.
/// Transmit: one `sendmmsg` per batch on a transmit-only socket with qdisc bypass (through the
/// qdisc with `[switch] transmit = "qdisc"`: ``setTransmitThroughQdisc(_:)``), outside the
/// loop's epoll set, so a sent frame's release does not walk the loop's wait queue; `ENOBUFS` drops
/// the rest of the batch. For a VM TAP a second transmit-only socket goes through the qdisc, where
/// the kernel segments a GSO frame for a reader that has not enabled offloads (the bypass socket
/// refuses those with `ENOBUFS`). All sockets use `PACKET_VNET_HDR`.
///
/// On a VM's TAP, IPv4/IPv6 UDP frames longer than the MTU plus the link header are dropped by a
/// socket filter before they reach the ring: they can only be UDP superframes (UFO), which the
/// kernel cannot describe with a virtio-net header and which, on a `TPACKET_V2` ring, make it drop
/// every later frame of the socket (issue 12, finding 1; see ``PacketSocket/limitUDPFrames(to:)``).
/// The filter follows MTU changes.
///
/// ## Concurrency model
/// See ``PortDriver``: opened on any one thread, then confined to the packet-loop queue. It owns
/// its three sockets and the ring (which keeps the receive socket alive while mapped).
public final class PacketRingDriver: PortDriver {
    /// Receive ring of every AF_PACKET port: 1024 slots of 2 KiB (2 MiB per port), room for a few
    /// milliseconds of a busy VM while the loop serves others, and for what a VM sends while the
    /// daemon restarts (the ring is handed over): about 400 ms at 2500 frames/s (512 slots were
    /// overrun by planned restarts at 5000 frames/s on a loaded machine). A slot holds a full-size
    /// frame; bigger ones (GSO superframes) come whole through the socket queue.
    public static let ringGeometry = ReceiveRing.Geometry(frameSize: 2048, frameCount: 1024)

    let device: String
    private let socket: PacketSocket
    private let ring: ReceiveRing
    /// Transmit-only, qdisc bypass; nil if it could not be opened (then frames go out on `socket`).
    private let transmitSocket: PacketSocket?
    /// Transmit-only, through the qdisc (VM TAPs); nil if none.
    private let segmentingSocket: PacketSocket?
    private let buffers: BatchBuffers
    /// Frames the kernel dropped because the ring was full (`PACKET_STATISTICS`, summed by the tick).
    private var ringFull: UInt64 = 0
    /// Frames bigger than a ring slot that the kernel could not also queue (receive buffer full).
    private var oversizedLost: UInt64 = 0
    private var closed = false
    /// The MTU the UDP superframe filter was set for (VM TAPs), nil without the filter.
    private var filteredMTU: UInt32?
    /// The receive socket carries the fast path's filter instead (``hideSkbPathFrames(of:)``).
    private var skbPathFilter = false
    /// Frames waiting in an adopted ring when it was taken over (0 for a new socket).
    public private(set) var resumedFrames = 0
    /// Names its sockets are kept under for the next restart (empty: not kept).
    private var handOverNames: [String] = []
    private var handOver: SocketHandOver?

    public let followsCarrier = true

    /// Opens the sockets on `link` and maps the ring. A VM's TAP also gets the segmenting socket and
    /// the UDP superframe filter; an uplink is joined in promiscuous mode.
    /// - Throws: ``SystemError`` naming the failed step and the device; nothing stays open.
    ///
    /// With `handOver`, the driver first takes over the sockets a previous daemon process opened on
    /// this link and handed over (``SocketHandOver``, names ``SocketHandOver/socketName(_:index:device:)``
    /// with `rx`, `tx`, `sg`): the receive ring is mapped again and reading resumes at the oldest frame
    /// waiting, so frames that arrived during the restart are forwarded, not lost. A socket that
    /// cannot be taken over is opened anew. All three are then kept for the next restart.
    init(link: LinkInfo, role: PacketPortRole, buffers: BatchBuffers, handOver: SocketHandOver? = nil) throws {
        device = link.name
        let isTAP = role == .vmTAP
        let limit = isTAP ? Self.udpFrameLimit(mtu: link.mtu) : nil
        func inherited(_ kind: String) -> PacketSocket? {
            guard let fd = handOver?.adopt(name: SocketHandOver.socketName(kind, index: link.index, device: link.name)) else { return nil }
            return try? PacketSocket(adopting: fd, interfaceIndex: link.index, interfaceName: link.name)
        }
        var adopted: (PacketSocket, ReceiveRing)?
        if let old = inherited("rx") {
            do {
                // The MTU may have changed while no daemon ran.
                if let limit { try old.limitUDPFrames(to: limit) }
                adopted = (old, try ReceiveRing(socket: old, geometry: Self.ringGeometry))
            } catch {
                old.close()  // another ring size or a broken socket: a new one below
            }
        }
        if let (old, oldRing) = adopted {
            socket = old
            ring = oldRing
            resumedFrames = ring.resumePosition()
        } else {
            socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: Self.receiveOptions(udpLimit: limit))
            if role == .uplink { try socket.addPromiscuousMembership(interfaceIndex: link.index) }
            ring = try ReceiveRing(socket: socket, geometry: Self.ringGeometry)
        }
        filteredMTU = isTAP ? link.mtu : nil
        transmitSocket = inherited("tx") ?? Self.transmitOnly(link, bypass: true)
        segmentingSocket = isTAP ? inherited("sg") ?? Self.transmitOnly(link, bypass: false) : nil
        self.buffers = buffers
        if let handOver {
            var kept: [String] = []
            for (kind, s) in [("rx", socket), ("tx", transmitSocket), ("sg", segmentingSocket)] {
                guard let s else { continue }
                let name = SocketHandOver.socketName(kind, index: link.index, device: link.name)
                handOver.keep(s.fileDescriptor, name: name)
                kept.append(name)
            }
            handOverNames = kept
            self.handOver = handOver
        }
    }

    /// The receive socket's options (a ring, virtio-net headers, VLAN tags in auxdata, own sends ignored).
    static func receiveOptions(udpLimit: Int?) -> PacketSocket.Options {
        .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true, receiveBuffer: 4 << 20,
              sendBuffer: 4 << 20, receiveRing: ringGeometry, udpFrameLimit: udpLimit)
    }

    /// Opens the receive sockets of VM TAPs `links` at once, on parallel threads, and offers them to
    /// `handOver` as if a previous run had handed them over: setting up a ring waits for an RCU grace
    /// period in the kernel (`synchronize_net`, 10-30 ms), which in parallel is paid about once
    /// instead of once per port. For a start with no sockets handed over (after a crash without
    /// systemd's store). Links that already have one waiting are skipped.
    static func prepareReceiveSockets(for links: [LinkInfo], handOver: SocketHandOver) {
        // Only admin-up TAPs: binding to a down device leaves the socket dead (ENETDOWN, no hook);
        // a down one gets its socket after re-adoption brings it up.
        let wanted = links.filter {
            $0.isUp && !handOver.hasInherited(SocketHandOver.socketName("rx", index: $0.index, device: $0.name))
        }
        guard !wanted.isEmpty else { return }
        DispatchQueue.concurrentPerform(iterations: wanted.count) { i in
            let link = wanted[i]
            guard let s = try? PacketSocket(interfaceIndex: link.index, interfaceName: link.name,
                                            options: receiveOptions(udpLimit: udpFrameLimit(mtu: link.mtu))) else { return }
            handOver.offer(s.release(), name: SocketHandOver.socketName("rx", index: link.index, device: link.name))
        }
    }

    /// The longest UDP frame that is not a superframe: the MTU, the Ethernet header and one VLAN tag
    /// left in the frame.
    static func udpFrameLimit(mtu: UInt32) -> Int { Int(mtu) + 18 }

    deinit { close() }

    /// A transmit-only AF_PACKET socket with virtio-net headers, nil if it cannot be opened. With
    /// `bypass`, straight to the driver (ENOBUFS when the TAP queue is full); without, through the
    /// qdisc.
    private static func transmitOnly(_ link: LinkInfo, bypass: Bool) -> PacketSocket? {
        let options = PacketSocket.Options(vnetHeader: true, auxData: false, ignoreOutgoing: false, qdiscBypass: bypass,
                                           sendBuffer: bypass ? 4 << 20 : nil, receives: false)
        return try? PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: options)
    }

    public var readiness: PollHandle { socket.pollHandle }

    /// Takes up to `max` frames from the ring into the batch, with no system call except for frames
    /// too big for a ring slot. Returns how many ring slots were consumed.
    @inline(__always)
    public func receive(into batch: FrameBatch, max: Int) -> PortReceive {
        let room = batch.slotSize - FrameBatch.frameOffset - FrameBatch.headroom
        var taken = 0
        while taken < max, ring.next() {
            taken += 1
            if ring.isCopied {
                // The whole frame (a GSO superframe) waits in the socket queue: read it into the next slot.
                ring.release()
                let i = batch.count
                switch buffers.rx.receive(from: socket, slot: i) {
                case .done(1): buffers.commit(slot: i)
                case .failed(let code): return .failed(code)
                default: oversizedLost &+= 1  // the kernel did not queue it after all
                }
                continue
            }
            let length = ring.frameLength
            guard !ring.isTruncated, length <= room, let vnet = ring.vnetHeader else {
                ring.release()  // cut to the slot and not queued (receive buffer full): not a frame
                oversizedLost &+= 1
                continue
            }
            let tci = ring.vlanTCI
            let tpid = tci == nil ? 0x8100 : ring.vlanTPID ?? 0x8100
            let dst = batch.slotBase(batch.count) + FrameBatch.frameOffset
            dst.copyMemory(from: ring.frame, byteCount: length)
            let header = VirtioNetHeader(loading: vnet)
            ring.release()
            batch.commitReceived(length: length, vnetHeader: header, vlanTag: tci, vlanTPID: tpid)
        }
        return .received(taken)
    }

    /// One `sendmmsg` on the bypass socket; a GSO frame refused with `ENOBUFS` (a reader without
    /// offloads) and the rest of the batch are resent through the segmenting socket, whose drops are
    /// silent (so it is only the fallback for GSO frames).
    public func transmit(_ batch: FrameBatch, frames: UnsafeBufferPointer<UInt16>) -> PortTransmit {
        buffers.queue(batch, frames)
        switch buffers.tx.send(to: transmitSocket ?? socket) {
        case .sent(let n):
            return PortTransmit(TransmitResult(sent: n))
        case .failed(let sent, let code):
            let refusal = SendRefusal(errno: code)
            if refusal == .noBuffers, let segmenting = segmentingSocket, sent < frames.count,
               let h = batch.virtioHeader(Int(frames[sent])), h.gsoType != VirtioNetHeader.gsoNone {
                buffers.requeue(batch, frames, from: sent)
                switch buffers.tx.send(to: segmenting) {
                case .sent(let n): return PortTransmit(TransmitResult(sent: sent + n))
                case .failed(let n, _): return PortTransmit(TransmitResult(sent: sent + n, failure: .transmitQueueFull))
                }
            }
            return PortTransmit(sent: sent, refusal: refusal, errno: code)
        }
    }

    /// Puts the fast path's receive filter on the receive socket (VM TAPs), so frames its skb path
    /// forwards do not reach the slow path too; nil puts the classic UDP superframe filter back.
    func hideSkbPathFrames(of fastPath: XDPFastPath?) throws(SystemError) {
        guard !closed, let mtu = filteredMTU else { return }
        if let fastPath {
            try fastPath.hideSkbPathFrames(from: socket)
            skbPathFilter = true
        } else if skbPathFilter {
            try socket.limitUDPFrames(to: Self.udpFrameLimit(mtu: mtu))
            skbPathFilter = false
        }
    }

    /// `[switch] transmit`: the socket batches go out on skips the qdisc or not. The segmenting
    /// socket always goes through it. A handed-over socket keeps what the previous run set until the
    /// switch applies its own setting when the port is plugged in.
    public func setTransmitThroughQdisc(_ on: Bool) throws {
        guard !closed else { return }
        try (transmitSocket ?? socket).setQdiscBypass(!on)
    }

    public func linkChanged(_ info: LinkInfo) {
        guard !closed, let mtu = filteredMTU, mtu != info.mtu else { return }
        if skbPathFilter {
            filteredMTU = info.mtu  // the fast path's filter does not depend on the MTU
            return
        }
        do {
            try socket.limitUDPFrames(to: Self.udpFrameLimit(mtu: info.mtu))
            filteredMTU = info.mtu
        } catch {
            // The old limit stays: larger plain UDP frames are dropped until the next change.
        }
    }

    public func pendingError() -> Int32? {
        let code = socket.pendingError()
        return code == 0 ? nil : code
    }

    public func collectStatistics() {
        guard !closed, let stats = try? ring.statistics() else { return }
        ringFull &+= UInt64(stats.dropped)
    }

    public func addDeviceDrops(to counters: inout PortCounters) {
        if ringFull > 0 { counters.drops[.init(direction: .ingress, reason: "receive ring full", reporter: "device"), default: 0] += ringFull }
        if oversizedLost > 0 {
            counters.drops[.init(direction: .ingress, reason: "oversized frame lost (receive buffer full)", reporter: "device"), default: 0] += oversizedLost
        }
    }

    public func close() {
        guard !closed else { return }
        closed = true
        for name in handOverNames { handOver?.release(name: name) }
        ring.close()  // unmapped before the socket goes
        socket.close()
        transmitSocket?.close()
        segmentingSocket?.close()
    }
}

extension PortTransmit {
    /// A send the kernel refused after `sent` frames: a full queue drops the rest of the batch; a
    /// device that went away also tears the port down.
    init(sent: Int, refusal: SendRefusal, errno code: Int32) {
        switch refusal {
        case .noBuffers, .wouldBlock: self.init(TransmitResult(sent: sent, failure: .transmitQueueFull))
        case .deviceGone: self.init(TransmitResult(sent: sent, failure: .transmitError), deviceError: code)
        // A refusal of one frame (longer than the device's MTU allows; EINVAL: a header the device
        // cannot take) costs that frame alone; the switch hands over the rest again.
        case .frameTooLarge: self.init(TransmitResult(sent: sent, failure: .frameTooLarge, refusedOne: true))
        case .other: self.init(TransmitResult(sent: sent, failure: .transmitError, refusedOne: true))
        }
    }
}
