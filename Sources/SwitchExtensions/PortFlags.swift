import SwitchCore

/// One on/off flag per port in flat storage (a guard's "is this port guarded"), with the number
/// of ports that have it on so a guard with none skips the batch at once.
final class PortFlags {
    private(set) var flags: UnsafeMutablePointer<Bool>
    private(set) var capacity: Int
    private(set) var onCount = 0

    init() {
        flags = .allocate(capacity: 1)
        flags.initialize(to: false)
        capacity = 0
    }

    deinit { flags.deallocate() }

    func reset(capacity: Int) {
        flags.deallocate()
        flags = .allocate(capacity: max(capacity, 1))
        flags.initialize(repeating: false, count: max(capacity, 1))
        self.capacity = capacity
        onCount = 0
    }

    func set(_ index: Int, _ on: Bool) {
        guard index >= 0 && index < capacity, flags[index] != on else { return }
        flags[index] = on
        onCount += on ? 1 : -1
    }

    @inline(__always) subscript(_ index: Int) -> Bool { index >= 0 && flags[index] }
}

/// DHCP guard (Hyper-V's `-DhcpGuard`), off by default: drops DHCP server messages from a guarded
/// port on ingress: DHCPv4 replies (BOOTREPLY from port 67: OFFER, ACK, NAK) and DHCPv6 ADVERTISE,
/// REPLY, RECONFIGURE and RELAY-REPL (from port 547). A UDP packet from those ports whose message
/// type cannot be read, or an IP packet whose header chain cannot be followed, is dropped too.
public final class DHCPGuard: PortPolicyExtension {
    public static let extensionName = "dhcp-guard"
    let vmDefault: Bool
    private let on = PortFlags()
    private var serverReason = DropReason.runtFrame
    private var unreadableReason = DropReason.runtFrame
    private var droppedV4: UInt64 = 0
    private var droppedV6: UInt64 = 0
    private var droppedUnreadable: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.flag("vm-default", extension: Self.extensionName, default: false)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        on.reset(capacity: capacity)
        serverReason = sw.registerDropReason("DHCP server message from a guarded port (dhcp-guard)")
        unreadableReason = sw.registerDropReason("unreadable IP/UDP headers on a guarded port")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        on.set(index, port.map { $0.security.dhcpGuard ?? ($0.isVM && vmDefault) } ?? false)
    }

    override public func ingress(_ context: inout IngressContext) {
        guard on.onCount > 0 else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) && on[batch.sourcePortIndex(i)] {
            let h = batch.parsed(i)
            guard h.etherType == EtherType.ipv4 || h.etherType == EtherType.ipv6 else { continue }
            switch PacketFields.transport(batch, i, h) {
            case .none:
                continue
            case .unreadable:
                context.drop(i, reason: unreadableReason)
                droppedUnreadable &+= 1
            case .header(let proto, let offset, let end):
                guard proto == PacketFields.udp else { continue }
                let p = UnsafeRawPointer(batch.frame(i))
                guard offset + 8 <= end else {
                    context.drop(i, reason: unreadableReason)
                    droppedUnreadable &+= 1
                    continue
                }
                let sourcePort = PacketFields.u16(p, offset)
                let v4 = h.etherType == EtherType.ipv4
                guard sourcePort == (v4 ? 67 : 547) else { continue }
                guard offset + 9 <= end else {
                    context.drop(i, reason: unreadableReason)
                    droppedUnreadable &+= 1
                    continue
                }
                let op = PacketFields.u8(p, offset + 8)
                if v4 {
                    if op == 2 {  // BOOTREPLY; a relay's BOOTREQUEST (op 1) from port 67 passes
                        context.drop(i, reason: serverReason)
                        droppedV4 &+= 1
                    }
                } else if op == 2 || op == 7 || op == 10 || op == 13 {
                    context.drop(i, reason: serverReason)
                    droppedV6 &+= 1
                }
            }
        }
    }

    /// Compiled into the fast path: a guarded port's frames that could be DHCP server messages
    /// (or whose headers cannot be read) take the slow path, where this guard sees them.
    override public func offloadChecks(for port: PortID, switch sw: VirtualSwitch) -> OffloadChecks {
        guard let index = sw.portIndex(of: port), on[index] else { return [] }
        return .dhcpServer
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("guarded-ports", UInt64(on.onCount)), ExtensionCounter("dropped-dhcpv4", droppedV4),
         ExtensionCounter("dropped-dhcpv6", droppedV6), ExtensionCounter("dropped-unreadable", droppedUnreadable)]
    }
}

/// Router guard (Hyper-V's `-RouterGuard`), off by default: drops ICMPv6 router advertisements
/// and redirects, and ICMPv4 redirects, from a guarded port on ingress. The IPv6 extension-header
/// chain is followed (the RA-guard evasion of RFC 7113); a chain or ICMP header that cannot be read
/// is dropped.
public final class RouterGuard: PortPolicyExtension {
    public static let extensionName = "router-guard"
    let vmDefault: Bool
    private let on = PortFlags()
    private var routerReason = DropReason.runtFrame
    private var unreadableReason = DropReason.runtFrame
    private var droppedRA: UInt64 = 0
    private var droppedRedirect: UInt64 = 0
    private var droppedUnreadable: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.flag("vm-default", extension: Self.extensionName, default: false)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        on.reset(capacity: capacity)
        routerReason = sw.registerDropReason("router advertisement or redirect from a guarded port (router-guard)")
        unreadableReason = sw.registerDropReason("unreadable IP/ICMP headers on a guarded port")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        on.set(index, port.map { $0.security.routerGuard ?? ($0.isVM && vmDefault) } ?? false)
    }

    override public func ingress(_ context: inout IngressContext) {
        guard on.onCount > 0 else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) && on[batch.sourcePortIndex(i)] {
            let h = batch.parsed(i)
            guard h.etherType == EtherType.ipv4 || h.etherType == EtherType.ipv6 else { continue }
            switch PacketFields.transport(batch, i, h) {
            case .none:
                continue
            case .unreadable:
                context.drop(i, reason: unreadableReason)
                droppedUnreadable &+= 1
            case .header(let proto, let offset, let end):
                let v4 = h.etherType == EtherType.ipv4
                guard proto == (v4 ? PacketFields.icmp : PacketFields.icmpv6) else { continue }
                guard offset + 1 <= end else {
                    context.drop(i, reason: unreadableReason)
                    droppedUnreadable &+= 1
                    continue
                }
                let type = PacketFields.u8(UnsafeRawPointer(batch.frame(i)), offset)
                if v4 ? type == 5 : type == 137 {
                    context.drop(i, reason: routerReason)
                    droppedRedirect &+= 1
                } else if !v4 && type == 134 {
                    context.drop(i, reason: routerReason)
                    droppedRA &+= 1
                }
            }
        }
    }

    /// Compiled into the fast path: a guarded port's router advertisements and redirects (and
    /// frames whose headers cannot be read) take the slow path, where this guard sees them.
    override public func offloadChecks(for port: PortID, switch sw: VirtualSwitch) -> OffloadChecks {
        guard let index = sw.portIndex(of: port), on[index] else { return [] }
        return .routerMessages
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("guarded-ports", UInt64(on.onCount)), ExtensionCounter("dropped-ra", droppedRA),
         ExtensionCounter("dropped-redirect", droppedRedirect), ExtensionCounter("dropped-unreadable", droppedUnreadable)]
    }
}
