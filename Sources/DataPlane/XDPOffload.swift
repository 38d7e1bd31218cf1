import LinuxNet
import SwitchCore

/// The switch's ``OffloadDatapath`` over the XDP program's maps: an entry's ingress port becomes
/// its TAP's ifindex in the key, its egress port the devmap index (the switch's port index).
///
/// ## Concurrency model
/// Owned by the ``SwitchRuntime``'s packet-loop queue, like the switch that calls it.
final class XDPOffload: OffloadDatapath {
    let fastPath: XDPFastPath
    /// TAP ifindex by the switch's port index; 0 when the port has no fast path.
    var ifindex: [Int32]

    init(fastPath: XDPFastPath) {
        self.fastPath = fastPath
        ifindex = Array(repeating: 0, count: fastPath.maxPorts)
    }

    func key(_ flow: OffloadFlow) -> XDPFastPath.FlowKey? {
        let i = ifindex[flow.ingressIndex]
        guard i > 0 else { return nil }
        return XDPFastPath.FlowKey(ifindex: UInt32(i), tag: flow.wireTag, dst: flow.destination.rawValue, src: flow.source.rawValue)
    }

    func install(_ flow: OffloadFlow, to target: OffloadTarget) -> Bool {
        guard ifindex[target.egressIndex] > 0, let k = key(flow) else { return false }
        let tag: XDPFastPath.TagAction = switch target.egressTag {
        case .unchanged: .keep
        case .push(let vid): .push(vid)
        case .pop: .pop
        }
        return fastPath.insert(k, egress: target.egressIndex, ingress: flow.ingressIndex, tag: tag, checks: Self.checks(target.checks))
    }

    /// `flow_value.checks` in the program: CHECK_DHCP_SERVER 1, CHECK_ROUTER 2.
    static func checks(_ c: OffloadChecks) -> UInt32 {
        (c.contains(.dhcpServer) ? 1 : 0) | (c.contains(.routerMessages) ? 2 : 0)
    }

    func remove(_ flow: OffloadFlow) {
        if let k = key(flow) { fastPath.delete(k) }
    }

    func lastUse(_ flow: OffloadFlow) -> UInt64? {
        key(flow).flatMap { fastPath.lastUse($0) }
    }

    func counters(portIndex: Int) -> FastPathCounters {
        let c = fastPath.counters(portIndex)
        return FastPathCounters(framesIn: c.framesIn, bytesIn: c.bytesIn, framesOut: c.framesOut, bytesOut: c.bytesOut)
    }
}

extension SwitchRuntime {
    /// Turns the XDP fast path on (`enabled`) or off, between two batches. On: loads the program
    /// and attaches it to every VM TAP; when that is not possible the switch stays on the slow path
    /// and the returned line says why. Off: every entry, attachment and map is removed.
    /// Returns the line to log.
    public func setOffload(enabled: Bool) async -> String {
        let devices = self.devices
        let maxPorts = sw.configuration.maxPorts, maxFlows = sw.configuration.maxOffloadedFlows
        guard enabled else {
            await onQueueAsync { self.stopOffload(reason: "offload = \"off\"") }
            return "offload off: every frame takes the slow path (AF_PACKET)"
        }
        if await onQueueAsync({ self.xdp != nil }) { return "offload xdp: already on" }
        let loaded: Result<XDPFastPath?, any Error>
        do { loaded = .success(try devices.makeFastPath(maxPorts: maxPorts, maxFlows: maxFlows)) } catch { loaded = .failure(error) }
        let handover = Handover(value: loaded)
        return await onQueueAsync {
            switch handover.value {
            case .success(let fastPath?):
                let xdp = XDPOffload(fastPath: fastPath)
                self.xdp = xdp
                self.sw.setOffloadDatapath(xdp)
                for io in self.ports.values { self.attachOffload(io) }
                return "offload xdp: learned unicast flows between VM TAPs take the XDP fast path"
            case .success(nil):
                self.sw.setOffloadDatapath(nil, offReason: "these devices have no XDP fast path")
                return "offload xdp unavailable: these devices have no XDP fast path; every frame takes the slow path"
            case .failure(let error):
                self.sw.setOffloadDatapath(nil, offReason: "XDP unavailable: \(error)")
                return "offload xdp unavailable (\(error)); every frame takes the slow path"
            }
        }
    }

    /// Attaches the fast path to `io`'s TAP when it is a VM's, and tells the switch.
    func attachOffload(_ io: PortIO) {
        guard let xdp else { return }
        guard io.backing == .vmTAP, let ifindex = io.linkIndex, let index = sw.portIndex(of: io.id) else {
            let kind = switch io.backing {
            case .vmTAP: "VM TAP in another namespace"
            case .internalTAP: "internal port"
            case .external: "uplink"
            }
            sw.setOffloadSupport(io.id, unsupportedReason: "\(kind): slow path only")
            return
        }
        do {
            try xdp.fastPath.setPort(index, ifindex: ifindex)
            io.xdpLink = try xdp.fastPath.attach(ifindex: ifindex, name: io.device)
            xdp.ifindex[index] = ifindex
            sw.setOffloadSupport(io.id, unsupportedReason: nil)
        } catch {
            xdp.fastPath.clearPort(index)
            sw.setOffloadSupport(io.id, unsupportedReason: "XDP attach failed: \(error)")
            logger.warning("XDP fast path not attached to \(io.device): \(error)")
            return
        }
        // The skb path (partial checksums, TCP superframes): the tcx program first, then the receive
        // filter that hides its frames from the slow path. Without it those frames stay on the slow path.
        guard let ring = io.driver as? PacketRingDriver else { return }
        do {
            io.tcxLink = try xdp.fastPath.attachSkbPath(ifindex: ifindex, name: io.device)
            try ring.hideSkbPathFrames(of: xdp.fastPath)
        } catch {
            io.tcxLink?.close()
            io.tcxLink = nil
            try? ring.hideSkbPathFrames(of: nil)
            logger.warning("fast path for partial checksums and superframes not attached to \(io.device): \(error)")
        }
    }

    /// Removes every entry, attachment and map (on the queue).
    func stopOffload(reason: String) {
        guard let xdp else {
            sw.setOffloadDatapath(nil, offReason: reason)
            return
        }
        sw.setOffloadDatapath(nil, offReason: reason)
        for io in ports.values {
            io.xdpLink?.close()
            io.xdpLink = nil
            io.tcxLink?.close()
            io.tcxLink = nil
            try? (io.driver as? PacketRingDriver)?.hideSkbPathFrames(of: nil)
        }
        xdp.fastPath.close()
        self.xdp = nil
    }

    /// What the fast path alone forwarded from and to port `name` (nil: no fast path, no such port).
    public func fastPathCounters(_ name: String) async -> FastPathCounters? {
        await onQueueAsync {
            guard let xdp = self.xdp, let p = self.sw.port(named: name), let i = self.sw.portIndex(of: p.id) else { return nil }
            return xdp.counters(portIndex: i)
        }
    }

    /// The fast path's state of port `id` for `show`: "fast path" (with the kernel's attach mode,
    /// the entries from and to the port and the frames the kernel forwarded for it) or why its
    /// frames take the slow path.
    func offloadDescription(_ id: PortID) -> String? {
        guard let status = sw.offloadStatus(of: id) else { return nil }
        switch status {
        case .allowed:
            let mode = ports[id]?.linkIndex.flatMap { XDPLink.mode(ifindex: $0) } ?? "xdp"
            let n = sw.offloadedFlowCounts(of: id)
            let c = sw.portIndex(of: id).flatMap { i in xdp.map { $0.counters(portIndex: i) } } ?? FastPathCounters()
            // The skb path (tcx) carries partial checksums and superframes; without it they take the slow path.
            let skb = ports[id]?.tcxLink == nil ? "; partial checksums and superframes: slow path" : ""
            let checks = sw.offloadChecks(of: id).names
            return "fast path (\(mode)); entries: \(n.from) from, \(n.to) to this port; fast-path frames: \(c.framesIn) in, \(c.framesOut) out" + skb
                + (checks.isEmpty ? "" : "; checked in the fast path: \(checks.joined(separator: ", "))")
        case .mustSeeEveryFrame(let reason):
            return "slow path: \(reason)"
        }
    }
}
