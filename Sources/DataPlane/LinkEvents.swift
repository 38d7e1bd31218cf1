import LinuxNet
import SwitchCore

extension SwitchRuntime {
    /// Reads every pending link notification and maps it onto the NIC lifecycle. Runs on `queue`.
    ///
    /// Carrier up on a VM TAP means QEMU attached (NIC_CONNECT); carrier down means it is gone
    /// (NIC_DISCONNECT; the port stays so a QEMU restart reconnects it). A TAP deleted by someone
    /// else drives the whole stop sequence. MTU or MAC changes drive NIC_UPDATED. Notifications
    /// arrive duplicated: each handler compares with the last state seen.
    func drainLinkEvents() {
        guard let monitor, !shutDown else { return }
        do {
            try monitor.drain { event in
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
        guard let io = byIndex[info.index], io.device == info.name, !io.closed else { return }
        if case .internalTAP = io.backing { return }  // we hold its fd: always attached
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

    /// After lost notifications: re-read every port's link and apply the differences.
    func resyncLinks() {
        for io in Array(ports.values) {
            guard let lookup = try? net.link(named: io.device) as LinkInfo?? else { continue }
            if let info = lookup {
                if info.index == io.interfaceIndex { linkChanged(info) }
            } else {
                if case .internalTAP(netns: .some) = io.backing { continue }  // lives in another namespace
                linkRemoved(io)
            }
        }
    }
}
