import CTapShim
import LinuxNet
import SwitchCore

#if canImport(Glibc)
import Glibc
#endif

extension SwitchRuntime: FrameSink {
    /// Drains one port's fd: up to `wakeBudget` frames, one batch at a time. Runs on `queue` when
    /// the loop reports the fd (`events` is the epoll mask).
    func drain(_ port: PortIO, events: UInt32) {
        if events & EPOLLERR.rawValue != 0, !port.isTUN, let code = Self.pendingError(port.fd) {
            // Level-triggered epoll repeats an error until it is read (ENETDOWN: the device went down or away).
            portFailed(port, errno: code)
            return
        }
        var budget = wakeBudget
        while budget > 0, !port.closed {
            batch.reset()
            let want = min(batch.capacity, budget)
            let n: Int
            if let ring = port.ring {
                n = fill(from: ring, port, max: want)
            } else {
                let result = port.isTUN ? rx.read(from: port.fd, max: want) : rx.receive(from: port.fd, max: want)
                switch result {
                case .done(let count): n = count
                case .wouldBlock: n = 0
                case .failed(let code):
                    portFailed(port, errno: code)
                    return
                }
                for i in 0..<n { commit(slot: i) }
            }
            if port.closed { return }
            if batch.count > 0 {
                if port.lastCarrier != true { refreshCarrier(port) }
                sw.process(batch, from: port.id, to: self)
            }
            // A full batch means more may be waiting: read again (up to the budget). A short one means
            // the queue was empty a moment ago: return to the loop instead of paying for a read that
            // would find nothing (level-triggered, it reports the fd again if frames arrived).
            budget -= max(n, 1)
            if n < want { break }
        }
        if sw.hasPendingFrames { sw.processPending(batch, to: self) }
    }

    /// Takes up to `max` frames from `port`'s receive ring into the batch, with no system call
    /// except for frames too big for a ring slot. Returns how many ring slots were consumed.
    @inline(__always)
    func fill(from ring: ReceiveRing, _ port: PortIO, max: Int) -> Int {
        let room = batch.slotSize - FrameBatch.frameOffset - FrameBatch.headroom
        var taken = 0
        while taken < max, ring.next() {
            taken += 1
            if ring.isCopied {
                // The whole frame (a GSO superframe) waits in the socket queue: read it into the next slot.
                ring.release()
                let i = batch.count
                switch rx.receive(from: port.fd, slot: i) {
                case .done(1): commit(slot: i)
                case .failed(let code):
                    portFailed(port, errno: code)
                    return taken
                default: port.oversizedLost &+= 1  // the kernel did not queue it after all
                }
                continue
            }
            let length = ring.frameLength
            guard !ring.isTruncated, length <= room, let vnet = ring.vnetHeader else {
                ring.release()  // cut to the slot and not queued (receive buffer full): not a frame
                port.oversizedLost &+= 1
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
        return taken
    }

    /// Commits receive-vector slot `i` (filled by recvmmsg or read) as the batch's next frame.
    @inline(__always)
    func commit(slot i: Int) {
        let headerSize = Self.vnetSize
        let length = rx.length(i) - headerSize
        // Truncated datagrams (bigger than a slot) and runts without a header are not frames.
        if length < 0 || rx.isTruncated(i) { return }
        let received = batch.slotBase(i) + FrameBatch.frameOffset - headerSize
        let header = VirtioNetHeader(loading: received)
        if batch.count != i {
            // Move the frame down to the next free slot only when a skipped datagram left a gap (rare).
            (batch.slotBase(batch.count) + FrameBatch.frameOffset - headerSize)
                .copyMemory(from: received, byteCount: length + headerSize)
        }
        // The TPID is only looked up (a second walk of the control messages) for tagged frames.
        let tci = rx.vlanTCI(i)
        batch.commitReceived(length: length, vnetHeader: header, vlanTag: tci,
                             vlanTPID: tci == nil ? 0x8100 : rx.vlanTPID(i) ?? 0x8100)
    }

    /// Delivery to one destination port: one sendmmsg (or a run of writev on a TUN fd).
    public func transmit(_ batch: FrameBatch, to port: PortID, frames: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        guard let io = ports[port], !io.closed else { return TransmitResult(sent: 0, failure: .transmitError) }
        tx.reset()
        let headerSize = Self.vnetSize
        for index in frames {
            let i = Int(index)
            // The header goes into the slot's headroom just before the frame: one iovec per message.
            let h = batch.frame(i) - headerSize
            (batch.virtioHeader(i) ?? VirtioNetHeader()).store(to: h)
            _ = tx.append(header: nil, headerLength: 0, frame: h, frameLength: batch.length(i) + headerSize)
        }
        let result = io.isTUN ? tx.write(to: io.fd) : tx.send(to: io.sendFD)
        switch result {
        case .sent(let n):
            return TransmitResult(sent: n)
        case .failed(let sent, let code):
            if code == ENOBUFS, io.segmentingFD >= 0, sent < frames.count,
               let h = batch.virtioHeader(Int(frames[sent])), h.gsoType != VirtioNetHeader.gsoNone {
                return transmitSegmenting(batch, io, frames, from: sent)
            }
            if code == ENOBUFS || code == EAGAIN { return TransmitResult(sent: sent, failure: .transmitQueueFull) }
            if code == ENETDOWN || code == ENXIO || code == ENODEV {
                // The device went away under us: tear the port down once this batch is done.
                loop.async { [weak self] in
                    if let self, let io = self.ports[port] { self.portFailed(io, errno: code) }
                }
            }
            return TransmitResult(sent: sent, failure: .transmitError)
        }
    }

    /// Resends `frames[start...]` through the qdisc socket, which segments superframes in software.
    /// Its drops are silent (no ENOBUFS there), so it is only the fallback for GSO frames.
    func transmitSegmenting(_ batch: FrameBatch, _ io: PortIO, _ frames: UnsafeBufferPointer<UInt16>, from start: Int) -> TransmitResult {
        tx.reset()
        for j in start..<frames.count {
            let i = Int(frames[j])
            // Headers are still in place before the frames (written by transmit).
            _ = tx.append(header: nil, headerLength: 0, frame: batch.frame(i) - Self.vnetSize, frameLength: batch.length(i) + Self.vnetSize)
        }
        switch tx.send(to: io.segmentingFD) {
        case .sent(let n): return TransmitResult(sent: start + n)
        case .failed(let n, _): return TransmitResult(sent: start + n, failure: .transmitQueueFull)
        }
    }

    /// Frames from a port not known to be connected: the kernel raises IFF_LOWER_UP as soon as
    /// QEMU attaches, but reports it through linkwatch up to a second later, and the VM may already
    /// be sending (a DHCP request, an ARP). Read the link's flags now (one netlink request, only in
    /// this state) so NIC_CONNECT happens before these frames are processed instead of dropping them.
    func refreshCarrier(_ port: PortIO) {
        if case .internalTAP = port.backing { return }
        if let info = try? net.link(index: port.interfaceIndex), info.name == port.device { linkChanged(info) }
    }

    /// The socket's pending error (`SO_ERROR`, cleared by reading it), nil if none.
    static func pendingError(_ fd: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == 0 else { return nil }
        return value == 0 ? nil : value
    }

    /// A port's fd reported an error: its device vanished or broke. Remove the port through the
    /// lifecycle; the rest of the switch keeps forwarding.
    func portFailed(_ port: PortIO, errno code: Int32) {
        guard !port.closed, ports[port.id] != nil else { return }
        let name = port.device
        logger.warning("port \(port.id) (\(name)) failed: \(String(cString: strerror(code))); removing it")
        removeLostPort(port)
    }

    /// Removes a port whose device is gone, without touching the device.
    func removeLostPort(_ port: PortIO) {
        port.close()
        ports[port.id] = nil
        if byIndex[port.interfaceIndex] === port { byIndex[port.interfaceIndex] = nil }
        do {
            try sw.removePort(port.id)
        } catch {
            logger.error("removing lost port \(port.device): \(error.message)")
        }
        portLostHandler?(port.device)
    }
}
