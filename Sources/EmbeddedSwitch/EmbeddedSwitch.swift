import SwitchCore

/// An in-memory switch for tests of the core and of extensions: create ports, connect NICs, push
/// frames in, see what each NIC receives and which events and drops happened. No OS involved.
///
/// Like the switch it wraps, it is confined to the caller's thread.
public final class EmbeddedSwitch: FrameSink {
    public let sw: VirtualSwitch
    public let batch: FrameBatch
    /// Every lifecycle event, in order.
    public private(set) var events: [LifecycleEvent] = []
    /// Every drop and exclusion report, in order.
    public private(set) var drops: [DropReport] = []
    /// Rule violations the switch refused (a capture extension dropping, ...).
    public private(set) var diagnostics: [String] = []
    /// Frames delivered per port (with their virtio-net header, if any), oldest first.
    private var delivered: [PortID: [(bytes: [UInt8], header: VirtioNetHeader?)]] = [:]
    /// When set for a port, its "TAP queue" accepts only this many frames per batch (simulates ENOBUFS),
    /// normal frames and an extension's copies together.
    public var transmitLimit: [PortID: Int] = [:]
    private var takenThisBatch: [PortID: Int] = [:]
    /// The switch's clock in nanoseconds (``VirtualSwitch/clockNanoseconds``, which its timers
    /// run on here): manual, moved by ``advanceClock(nanoseconds:)``.
    public var clockNanoseconds: UInt64 { sw.clockNanoseconds }

    public init(configuration: SwitchConfiguration = SwitchConfiguration(maxPorts: 64, batchCapacity: 32)) {
        sw = VirtualSwitch(configuration: configuration)
        batch = sw.makeBatch(slotSize: 65_536 + 2 * FrameBatch.headroom)
        sw.onEvent = { [unowned self] in events.append($0) }
        sw.onDrop = { [unowned self] in drops.append($0) }
        sw.onDiagnostic = { [unowned self] in diagnostics.append($0) }
        sw.clockNanoseconds = 1_000_000_000
    }

    /// PORT_CREATE + NIC_CREATE (+ NIC_CONNECT unless `connect` is false) for a VM NIC.
    @discardableResult
    public func addPort(_ name: String, mac: MACAddress, type: PortType = .synthetic, vm: String = "vm",
                        properties: [PortProperty] = [], connect: Bool = true) throws(SwitchError) -> PortID {
        let id = try sw.createPort(name: name, type: type, nic: NICParameters(type: type, vmName: vm, permanentMAC: mac),
                                   properties: properties)
        if connect { try sw.connectNIC(on: id) }
        return id
    }

    /// Sends frames from `port` as one batch (as the packet loop does after one read).
    public func send(from port: PortID, _ frames: [[UInt8]], vnetHeader: VirtioNetHeader? = nil) {
        batch.reset()
        takenThisBatch.removeAll()
        for f in frames { batch.append(f, vnetHeader: vnetHeader) }
        sw.process(batch, from: port, to: self)
    }

    public func send(from port: PortID, _ frame: [UInt8], vnetHeader: VirtioNetHeader? = nil) {
        send(from: port, [frame], vnetHeader: vnetHeader)
    }

    /// Runs frames extensions resumed.
    public func flushPending() {
        takenThisBatch.removeAll()
        _ = sw.processPending(batch, to: self)
    }

    /// Frames delivered to `port` since the last call.
    public func take(_ port: PortID) -> [[UInt8]] {
        let out = delivered[port, default: []].map(\.bytes)
        delivered[port] = []
        return out
    }

    /// Frames delivered to `port` since the last call, with their virtio-net headers.
    public func takeWithHeaders(_ port: PortID) -> [(bytes: [UInt8], header: VirtioNetHeader?)] {
        let out = delivered[port, default: []]
        delivered[port] = []
        return out
    }

    /// Moves the timer clock on with no traffic (an idle switch) and runs what is due, as the
    /// packet loop does when it wakes for the earliest deadline: timers fire, then resumed frames
    /// are delivered. Returns the number of frames processed.
    @discardableResult
    public func advanceClock(nanoseconds: UInt64) -> Int {
        sw.clockNanoseconds &+= nanoseconds
        takenThisBatch.removeAll()
        return sw.runTimers(batch, to: self)
    }

    public func clearRecords() {
        events.removeAll()
        drops.removeAll()
        diagnostics.removeAll()
        delivered.removeAll()
    }

    /// Advances the switch clock (MAC aging) and expires old addresses.
    public func advance(seconds: UInt64) {
        sw.now += seconds
        sw.expireAddresses()
    }

    public func transmit(_ batch: FrameBatch, to port: PortID, frames: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        var limit = frames.count
        if let cap = transmitLimit[port] {
            limit = min(limit, max(0, cap - takenThisBatch[port, default: 0]))
            takenThisBatch[port, default: 0] += limit
        }
        for j in 0..<limit {
            let i = Int(frames[j])
            delivered[port, default: []].append((batch.copyBytes(i), batch.virtioHeader(i)))
        }
        return TransmitResult(sent: limit)
    }
}

/// Builders for test frames.
public enum TestFrame {
    public static func ethernet(dst: MACAddress, src: MACAddress, type: UInt16 = 0x88B5, vlan: UInt16? = nil,
                                payload: [UInt8] = Array(repeating: 0xAB, count: 46)) -> [UInt8] {
        var f = dst.bytes + src.bytes
        if let vlan { f += [0x81, 0x00, UInt8(vlan >> 8), UInt8(vlan & 0xFF)] }
        f += [UInt8(type >> 8), UInt8(type & 0xFF)]
        return f + payload
    }

    /// A minimal valid IPv4 packet (UDP protocol number, no UDP header validation) inside Ethernet.
    public static func ipv4(dst: MACAddress, src: MACAddress, from: UInt32 = 0x0A00_0001, to: UInt32 = 0x0A00_0002,
                            payloadLength: Int = 26, vlan: UInt16? = nil) -> [UInt8] {
        let total = 20 + payloadLength
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0]
        for a in [from, to] { ip += [UInt8(a >> 24), UInt8((a >> 16) & 0xFF), UInt8((a >> 8) & 0xFF), UInt8(a & 0xFF)] }
        return ethernet(dst: dst, src: src, type: 0x0800, vlan: vlan, payload: ip + Array(repeating: 0, count: payloadLength))
    }

    public static func arpRequest(src: MACAddress, senderIP: UInt32, targetIP: UInt32) -> [UInt8] {
        var p: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 1] + src.bytes
        p += [UInt8(senderIP >> 24), UInt8((senderIP >> 16) & 0xFF), UInt8((senderIP >> 8) & 0xFF), UInt8(senderIP & 0xFF)]
        p += [0, 0, 0, 0, 0, 0]
        p += [UInt8(targetIP >> 24), UInt8((targetIP >> 16) & 0xFF), UInt8((targetIP >> 8) & 0xFF), UInt8(targetIP & 0xFF)]
        return ethernet(dst: .broadcast, src: src, type: 0x0806, payload: p + Array(repeating: 0, count: 18))
    }

    public static func ipv6(dst: MACAddress, src: MACAddress, payloadLength: Int = 8) -> [UInt8] {
        var h: [UInt8] = [0x60, 0, 0, 0, UInt8(payloadLength >> 8), UInt8(payloadLength & 0xFF), 59, 64]
        h += Array(repeating: 0xFE, count: 32)
        return ethernet(dst: dst, src: src, type: 0x86DD, payload: h + Array(repeating: 0, count: payloadLength))
    }
}
