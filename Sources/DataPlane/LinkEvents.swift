import LinuxNet
import SwitchCore

extension SwitchRuntime {
    /// Reads every pending link notification and maps it onto the NIC lifecycle. Runs on `queue`.
    ///
    /// Carrier up on a VM TAP means QEMU attached (NIC_CONNECT); carrier down means it is gone
    /// (NIC_DISCONNECT; the port stays so a QEMU restart reconnects it). A device deleted by someone
    /// else drives the whole stop sequence. MTU or MAC changes drive NIC_UPDATED. Notifications
    /// arrive duplicated: each handler compares with the last state seen.
    func drainLinkEvents() {
        guard let linkEvents, !shutDown else { return }
        do {
            try linkEvents.drain { event in
                switch event {
                case .changed(let info): linkChanged(info)
                case .removed(let index, _): if let io = byIndex[index] { linkRemoved(io) }
                case .overrun: resyncLinks()
                }
            }
        } catch {
            logger.error("link monitor: \(error); resynchronising")
            resyncLinks()
        }
    }

    /// - Parameter fromBatch: called while a batch read from this port waits (``refreshCarrier(_:)``):
    ///   the port's backlog must not be read into the batch then.
    func linkChanged(_ info: LinkInfo, fromBatch: Bool = false) {
        // A driver that holds the device's only queue is always attached: carrier does not apply.
        guard let io = byIndex[info.index], io.device == info.name, !io.closed else { return }
        io.driver.linkChanged(info)
        guard io.driver.followsCarrier else { return }
        if io.lastCarrier != info.hasCarrier {
            io.lastCarrier = info.hasCarrier
            let state = sw.nic(of: io.id)?.state
            do {
                if info.hasCarrier, state == .created || state == .disconnected {
                    try sw.connectNIC(on: io.id)
                } else if !info.hasCarrier, state == .connected {
                    // Frames still in the port's ring were sent while the guest was attached (the
                    // loop may have read only its budget of them so far): forward them before
                    // NIC_DISCONNECT, which would drop them as "source port is not accepting traffic".
                    if !fromBatch { forwardBacklog(io) }
                    try sw.disconnectNIC(on: io.id)
                    // A notification can be stale: a guest that went and came back at once (a QEMU
                    // restart) is attached again now, and if the "up" was coalesced away its NIC would
                    // stay disconnected and its frames be dropped. Read the carrier now and reconnect.
                    if !fromBatch, let index = io.linkIndex, let links = loopLinks,
                       let now = try? links.link(index: index), now.name == io.device, now.hasCarrier {
                        io.lastCarrier = true
                        try sw.connectNIC(on: io.id)
                    }
                }
            } catch {
                logger.error("carrier change on \(info.name): \(error.message)")
            }
        }
        if sw.nic(of: io.id)?.state == .connected {
            let mtuChanged = io.lastMTU != 0 && io.lastMTU != info.mtu
            let macChanged = !io.lastMAC.isEmpty && io.lastMAC != info.mac && info.mac.count == 6
            if mtuChanged || macChanged {
                let m = info.mac
                try? sw.updateNIC(on: io.id, mtu: mtuChanged ? info.mtu : nil,
                                  currentMAC: macChanged ? MACAddress(m[0], m[1], m[2], m[3], m[4], m[5]) : nil)
            }
        }
        io.lastMTU = info.mtu
        io.lastMAC = info.mac
    }

    /// Reads and forwards what the port's driver holds (bounded: a guest that is gone sends no more,
    /// but a stale notification may arrive while a new one is attached and sending).
    func forwardBacklog(_ port: PortIO) {
        var budget = 4 * wakeBudget
        while budget > 0, !port.closed {
            batch.reset()
            let want = min(batch.capacity, budget)
            guard case .received(let n) = port.driver.receive(into: batch, max: want) else { return }
            if batch.count > 0 { sw.process(batch, from: port.id, to: self) }
            budget -= max(n, 1)
            if n < want { break }
        }
    }

    func linkRemoved(_ io: PortIO) {
        guard !io.closed, ports[io.id] != nil else { return }
        logger.notice("device \(io.device) was deleted; removing port \(io.id)")
        removeLostPort(io)
    }

    /// After lost notifications: re-read every port's link (on the loop's own socket) and apply the
    /// differences. Ports whose device lives in another namespace are not visible here.
    func resyncLinks() {
        guard let links = loopLinks else { return }
        for io in Array(ports.values) {
            guard let index = io.linkIndex, let lookup = try? links.link(named: io.device) as LinkInfo?? else { continue }
            if let info = lookup {
                if info.index == index { linkChanged(info) }
            } else {
                linkRemoved(io)
            }
        }
    }
}
