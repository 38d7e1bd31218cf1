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

    func linkChanged(_ info: LinkInfo) {
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
                    try sw.disconnectNIC(on: io.id)
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
