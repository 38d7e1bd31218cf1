import PacketCapture
import SwitchCore
import SwitchExtensions

/// A frame sink that only counts: the benchmark measures the switch, not I/O.
public final class CountingSink: FrameSink {
    public private(set) var frames = 0
    public init() {}
    public func transmit(_ batch: FrameBatch, to port: PortID, frames list: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        frames &+= list.count
        return TransmitResult(sent: list.count)
    }
}

/// A switch in steady state plus a batch of frames to push through it repeatedly.
///
/// Every run refills the batch from a template (as recvmmsg would overwrite the slots), because
/// VLAN tag push/pop edits frames in place.
public final class ForwardingScenario {
    public enum Kind: String, CaseIterable, Sendable {
        /// Unicast between learned ports (4 VMs, destinations rotate).
        case unicast
        /// Broadcast from one port, flooded to the 3 others.
        case flood
        /// Access port (VLAN 10) to a learned trunk port: a tag is pushed on every frame.
        case trunk
    }

    public static let framesPerBatch = 64
    public static let frameLength = 128

    public let kind: Kind
    /// Every shipped policy extension enabled, with every per-port guard on.
    public let policies: Bool
    /// Also 100 ACL rules per port and direction (every one evaluated: the last one decides),
    /// storm control and policing on every port, all passing.
    public let limits: Bool
    /// A live capture of every port, both directions and drops, drained after each run (as
    /// `tapswitchctl capture` would be).
    public let capture: CaptureSession?
    /// A port mirror of bench0 and bench1, both directions, to bench3 (itself a destination), whose
    /// copies go out after each batch.
    public let mirror: PortMirrorExtension?
    public let sw: VirtualSwitch
    public let batch: FrameBatch
    public let sink = CountingSink()
    let source: PortID
    /// Frames to refill the batch with, back to back.
    let template: UnsafeMutableRawPointer
    /// Frames each run delivers (a flooded frame counts once per destination).
    public let deliveriesPerRun: Int

    public init(_ kind: Kind, policies: Bool = false, limits: Bool = false, capture: Bool = false, mirror: Bool = false) {
        self.kind = kind
        self.policies = policies || limits
        self.limits = limits
        let policies = self.policies
        sw = VirtualSwitch(configuration: SwitchConfiguration(maxPorts: 64, batchCapacity: Self.framesPerBatch))
        batch = sw.makeBatch(slotSize: 2048)
        if policies {
            for name in ExtensionRegistry.defaultEnabled { try! sw.enable(ExtensionRegistry.builtin.make(name)) }
        }
        let macs = (1...4).map { MACAddress(0x02, 0, 0, 0, 0, UInt8($0)) }
        var ids: [PortID] = []
        for (n, mac) in macs.enumerated() {
            var props: [PortProperty] = []
            if kind == .trunk { props = [n == 1 ? .vlan(.trunk(allowed: [10, 20], native: nil)) : .vlan(.access(10))] }
            if policies {
                // Every guard on and passing (the frames are IPv4 from 10.0.0.1 with the NIC's MAC),
                // and one community, so the isolation check runs for every destination.
                props.append(.security(try! PortSettings.parse([
                    "ip-guard=on", "allowed-ips=10.0.0.0/24", "dhcp-snooping=on", "dhcp-guard=on", "router-guard=on",
                    "pvlan=community:1", "mac-limit=16",
                ]).security))
            }
            if limits {
                // 99 rules that read L3/L4 and miss, then an allow that matches, in each direction.
                var rules: [String] = []
                for d in ["in", "out"] {
                    for k in 1...99 { rules.append("direction=\(d) src-ip=10.0.0.0/24 proto=tcp dst-port=\(k) action=deny") }
                    rules.append("direction=\(d) proto=udp action=allow")
                }
                let s = try! PortSettings.parse(["acl=" + rules.joined(separator: ","), "acl-default-in=deny", "acl-default-out=deny",
                                                 "storm-broadcast=1000000000", "storm-multicast=1000000000", "storm-unknown=1000000000",
                                                 "ingress-rate=1tbit", "ingress-frame-rate=1000000000",
                                                 "egress-rate=1tbit", "egress-frame-rate=1000000000"])
                props += [.acl(s.acl), .trafficLimits(s.limits)]
            }
            let id = try! sw.createPort(name: "bench\(n)", type: .synthetic,
                                        nic: NICParameters(type: .synthetic, permanentMAC: mac), properties: props)
            try! sw.connectNIC(on: id)
            ids.append(id)
        }
        source = ids[0]
        if capture {
            let ext = CaptureExtension()
            try! sw.enable(ext)
            let session = CaptureSession(
                interfaces: ids.enumerated().flatMap { n, id in
                    [CaptureSession.Interface(port: id, portName: "bench\(n)", direction: .inbound),
                     CaptureSession.Interface(port: id, portName: "bench\(n)", direction: .outbound)]
                },
                snaplen: 65_535, includeDrops: true)
            ext.add(session, on: sw)
            self.capture = session
        } else {
            self.capture = nil
        }
        if mirror {
            let ext = PortMirrorExtension()
            try! sw.enable(ext)
            ext.set([MirrorDefinition(name: "bench", sources: ["bench0", "bench1"], inbound: true, outbound: true, vlan: nil,
                                      destination: "bench3")], on: sw)
            self.mirror = ext
        } else {
            self.mirror = nil
        }
        // Learn every port's MAC (a gratuitous broadcast from each).
        for (n, id) in ids.enumerated() {
            batch.reset()
            var f = Self.frame(dst: .broadcast, src: macs[n])
            batch.append(&f, count: f.count)
            sw.process(batch, from: id, to: sink)
        }
        let template = UnsafeMutableRawPointer.allocate(byteCount: Self.framesPerBatch * Self.frameLength, alignment: 64)
        for i in 0..<Self.framesPerBatch {
            let dst: MACAddress
            switch kind {
            case .unicast: dst = macs[1 + i % 3]
            case .flood: dst = .broadcast
            case .trunk: dst = macs[1]
            }
            let f = Self.frame(dst: dst, src: macs[0])
            f.withUnsafeBytes { (template + i * Self.frameLength).copyMemory(from: $0.baseAddress!, byteCount: f.count) }
        }
        self.template = template
        deliveriesPerRun = Self.framesPerBatch * (kind == .flood ? 3 : 1)
    }

    deinit { template.deallocate() }

    /// One receive-and-forward cycle of a full batch. Allocates nothing in steady state.
    @inline(never)
    public func run() {
        // The packet loop reads the clock once per batch; here it advances 10 µs a batch, so the
        // policers refill.
        if limits { sw.clockNanoseconds &+= 10_000 }
        batch.reset()
        for i in 0..<Self.framesPerBatch {
            batch.append(UnsafeRawBufferPointer(start: template + i * Self.frameLength, count: Self.frameLength))
        }
        sw.process(batch, from: source, to: sink)
        capture?.ring.drain { _ in true }
    }

    /// A valid IPv4/UDP-numbered frame of ``frameLength`` bytes.
    static func frame(dst: MACAddress, src: MACAddress) -> [UInt8] {
        let total = frameLength - 14
        var f = dst.bytes + src.bytes + [0x08, 0x00]
        f += [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        f += Array(repeating: 0, count: frameLength - f.count)
        return f
    }
}

extension FrameBatch {
    fileprivate func append(_ f: inout [UInt8], count: Int) {
        f.withUnsafeBytes { _ = append($0) }
    }
}
