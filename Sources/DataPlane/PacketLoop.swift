import LinuxNet
import SwitchCore

#if canImport(Glibc)
import Glibc
#endif

extension SwitchRuntime: FrameSink {
    /// Drains one port's fd: up to `wakeBudget` frames, one batch at a time. Runs on `queue`.
    func drain(_ port: PortIO) {
        var budget = wakeBudget
        let headerSize = Self.vnetSize
        while budget > 0, !port.closed {
            batch.reset()
            let want = min(batch.capacity, budget)
            let result = port.isTUN ? rx.read(from: port.fd, max: want) : rx.receive(from: port.fd, max: want)
            let n: Int
            switch result {
            case .done(let count): n = count
            case .wouldBlock: return
            case .failed(let code):
                portFailed(port, errno: code)
                return
            }
            for i in 0..<n {
                let length = rx.length(i) - headerSize
                // Truncated datagrams (bigger than a slot) and runts without a header are not frames.
                if length < 0 || rx.isTruncated(i) { continue }
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
            if batch.count > 0 {
                if port.lastCarrier != true { refreshCarrier(port) }
                sw.process(batch, from: port.id, to: self)
            }
            // A full batch means more may be waiting: read again (up to the budget). A short one means
            // the queue was empty a moment ago: return to the read source instead of paying for a
            // recvmmsg that would only say EAGAIN (level-triggered, it fires again if frames arrived).
            budget -= max(n, 1)
            if n < want { break }
        }
        if sw.hasPendingFrames { sw.processPending(batch, to: self) }
    }

    /// Delivery to one destination port: one sendmmsg (or a run of writev on a TUN fd).
    public func transmit(_ batch: FrameBatch, to port: PortID, frames: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        guard let io = ports[port], !io.closed else { return TransmitResult(sent: 0, failure: .transmitError) }
        tx.reset()
        let headerSize = Self.vnetSize
        for (j, index) in frames.enumerated() {
            let i = Int(index)
            let h = txHeaders + j * headerSize
            (batch.virtioHeader(i) ?? VirtioNetHeader()).store(to: h)
            _ = tx.append(header: h, headerLength: headerSize, frame: batch.frame(i), frameLength: batch.length(i))
        }
        let result = io.isTUN ? tx.write(to: io.fd) : tx.send(to: io.fd)
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
                queue.async { [weak self] in
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
            _ = tx.append(header: txHeaders + j * Self.vnetSize, headerLength: Self.vnetSize, frame: batch.frame(i), frameLength: batch.length(i))
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
