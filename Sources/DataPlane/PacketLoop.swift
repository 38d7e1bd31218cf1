import Dispatch
import LinuxNet
import SwitchCore

extension SwitchRuntime: FrameSink {
    /// Drains one port: up to `wakeBudget` frames, one batch at a time. Runs on `queue` when the
    /// loop reports the port's driver ready.
    func drain(_ port: PortIO, events: PollEvents) {
        if events.contains(.error), let code = port.driver.pendingError() {
            // Level-triggered epoll repeats an error until it is read (ENETDOWN: the device went down or away).
            portFailed(port, errno: code)
            return
        }
        var budget = wakeBudget
        while budget > 0, !port.closed {
            batch.reset()
            let want = min(batch.capacity, budget)
            let n: Int
            switch port.driver.receive(into: batch, max: want) {
            case .received(let count): n = count
            case .failed(let code):
                portFailed(port, errno: code)
                return
            }
            if batch.count > 0 {
                if port.lastCarrier != true { refreshCarrier(port) }
                sw.clockNanoseconds = DispatchTime.now().uptimeNanoseconds
                sw.process(batch, from: port.id, to: self)
            }
            // A full batch means more may be waiting: read again (up to the budget). A short one means
            // the queue was empty a moment ago: return to the loop instead of paying for a read that
            // would find nothing (level-triggered, it reports the port again if frames arrived).
            budget -= max(n, 1)
            if n < want { break }
        }
        if sw.hasPendingFrames { sw.processPending(batch, to: self) }
    }

    /// Delivery to one destination port through its driver (one `sendmmsg` or a run of `writev`).
    public func transmit(_ batch: FrameBatch, to port: PortID, frames: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        guard let io = ports[port], !io.closed else { return TransmitResult(sent: 0, failure: .transmitError) }
        let outcome = io.driver.transmit(batch, frames: frames)
        if let code = outcome.deviceError {
            // The device went away under us: tear the port down once this batch is done.
            loop.async { [weak self] in
                if let self, let io = self.ports[port] { self.portFailed(io, errno: code) }
            }
        }
        return outcome.result
    }

    /// Frames from a port not known to be connected: the kernel raises IFF_LOWER_UP as soon as
    /// QEMU attaches, but reports it through linkwatch up to a second later, and the VM may already
    /// be sending (a DHCP request, an ARP). Read the link's flags now (one request on the loop's own
    /// netlink socket, only in this state) so NIC_CONNECT happens before these frames are processed
    /// instead of dropping them.
    func refreshCarrier(_ port: PortIO) {
        guard port.driver.followsCarrier, let index = port.linkIndex, let links = loopLinks else { return }
        if let info = try? links.link(index: index), info.name == port.device { linkChanged(info, fromBatch: true) }
    }

    /// A port's device reported an error: it vanished or broke. Remove the port through the
    /// lifecycle; the rest of the switch keeps forwarding.
    func portFailed(_ port: PortIO, errno code: Int32) {
        guard !port.closed, ports[port.id] != nil else { return }
        logger.warning("port \(port.id) (\(port.device)) failed: \(SystemError.describe(errno: code)); removing it")
        removeLostPort(port)
    }

    /// Removes a port whose device is gone, without touching the device.
    func removeLostPort(_ port: PortIO) {
        port.close()
        forget(port)
        do {
            try sw.removePort(port.id)
        } catch {
            logger.error("removing lost port \(port.device): \(error.message)")
        }
        portLostHandler?(port.device)
    }

    /// Drops a closed port from the port tables.
    func forget(_ port: PortIO) {
        ports[port.id] = nil
        if let index = port.linkIndex, byIndex[index] === port { byIndex[index] = nil }
    }
}
