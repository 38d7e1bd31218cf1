import SwitchCore

/// IP, ARP and neighbour-discovery source guard (libvirt's `clean-traffic`, Hyper-V's ARP/ND
/// spoofing protection), off by default. On a guarded port, on ingress:
/// - IPv4: the source must be allowed (`allowed-ips`, or a DHCP-snooped lease); 0.0.0.0 only
///   towards UDP port 67 (a DHCP client without an address).
/// - ARP: the sender MAC must be the frame's source MAC and the sender address allowed (0.0.0.0,
///   an ARP probe, passes).
/// - IPv6: the source must be allowed, link-local (fe80::/10) or unspecified (duplicate address
///   detection); a neighbour advertisement's target address must be allowed or link-local.
/// Other EtherTypes pass. With `dhcp-snooping=on`, a DHCPv4 ACK delivered to the port for the NIC's
/// MAC adds the acknowledged address for the lease time (at most ``maxLeases`` per port).
public final class IPGuard: PortPolicyExtension {
    public static let extensionName = "ip-guard"
    static let maxPrefixes = SecurityPolicy.maxAllowedIPs
    public static let maxLeases = 4
    /// Lease time assumed when an ACK carries none (option 51), and the longest kept.
    static let defaultLease: UInt64 = 86_400
    static let maxLease: UInt64 = 7 * 86_400

    let vmDefault: Bool
    private let on = PortFlags()
    private let snooping = PortFlags()
    private var capacity = 0
    private var v4Count: UnsafeMutablePointer<UInt8>?
    private var v4: UnsafeMutablePointer<UInt32>?      // (address, mask) pairs
    private var v6Count: UnsafeMutablePointer<UInt8>?
    private var v6: UnsafeMutablePointer<UInt64>?      // (high, low, mask high, mask low)
    private var leaseAddress: UnsafeMutablePointer<UInt32>?
    private var leaseExpiry: UnsafeMutablePointer<UInt64>?
    private var nicMACs: UnsafeMutablePointer<UInt64>? // permanent, current
    private var ipv4Reason = DropReason.runtFrame
    private var arpReason = DropReason.runtFrame
    private var ipv6Reason = DropReason.runtFrame
    private var ndReason = DropReason.runtFrame
    private var unreadableReason = DropReason.runtFrame
    private var droppedIPv4: UInt64 = 0
    private var droppedARP: UInt64 = 0
    private var droppedIPv6: UInt64 = 0
    private var droppedND: UInt64 = 0
    private var droppedUnreadable: UInt64 = 0
    private var snoopedLeases: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.flag("vm-default", extension: Self.extensionName, default: false)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    deinit { free() }

    private func free() {
        v4Count?.deallocate(); v4?.deallocate(); v6Count?.deallocate(); v6?.deallocate()
        leaseAddress?.deallocate(); leaseExpiry?.deallocate(); nicMACs?.deallocate()
    }

    override func prepare(_ sw: VirtualSwitch, capacity n: Int) {
        free()
        capacity = n
        on.reset(capacity: n)
        snooping.reset(capacity: n)
        v4Count = .allocate(capacity: n); v4Count?.initialize(repeating: 0, count: n)
        v4 = .allocate(capacity: n * Self.maxPrefixes * 2); v4?.initialize(repeating: 0, count: n * Self.maxPrefixes * 2)
        v6Count = .allocate(capacity: n); v6Count?.initialize(repeating: 0, count: n)
        v6 = .allocate(capacity: n * Self.maxPrefixes * 4); v6?.initialize(repeating: 0, count: n * Self.maxPrefixes * 4)
        leaseAddress = .allocate(capacity: n * Self.maxLeases); leaseAddress?.initialize(repeating: 0, count: n * Self.maxLeases)
        leaseExpiry = .allocate(capacity: n * Self.maxLeases); leaseExpiry?.initialize(repeating: 0, count: n * Self.maxLeases)
        nicMACs = .allocate(capacity: n * 2); nicMACs?.initialize(repeating: 0, count: n * 2)
        ipv4Reason = sw.registerDropReason("IPv4 source address not allowed (ip-guard)")
        arpReason = sw.registerDropReason("ARP sender not allowed (ip-guard)")
        ipv6Reason = sw.registerDropReason("IPv6 source address not allowed (ip-guard)")
        ndReason = sw.registerDropReason("neighbour advertisement for an address not allowed (ip-guard)")
        unreadableReason = sw.registerDropReason("unreadable IP headers on a guarded port (ip-guard)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard let v4Count, let v4, let v6Count, let v6, let leaseAddress, let leaseExpiry, let nicMACs else { return }
        on.set(index, port.map { $0.security.ipGuard ?? ($0.isVM && vmDefault) } ?? false)
        let wasSnooping = snooping[index]
        snooping.set(index, port?.security.dhcpSnooping ?? false)
        var n4 = 0, n6 = 0
        for prefix in port?.security.allowedIPs ?? [] {
            switch prefix.family {
            case .ipv4 where n4 < Self.maxPrefixes:
                v4[(index * Self.maxPrefixes + n4) * 2] = UInt32(truncatingIfNeeded: prefix.low)
                v4[(index * Self.maxPrefixes + n4) * 2 + 1] = prefix.ipv4Mask
                n4 += 1
            case .ipv6 where n6 < Self.maxPrefixes:
                let (mh, ml) = IPPrefix.mask6(prefix.length)
                let b = (index * Self.maxPrefixes + n6) * 4
                v6[b] = prefix.high; v6[b + 1] = prefix.low; v6[b + 2] = mh; v6[b + 3] = ml
                n6 += 1
            default:
                break
            }
        }
        v4Count[index] = UInt8(n4)
        v6Count[index] = UInt8(n6)
        // Leases belong to the NIC that got them: forget them with the NIC, or when snooping stops.
        if port?.nic == nil || (wasSnooping && !snooping[index]) {
            for k in 0..<Self.maxLeases { leaseAddress[index * Self.maxLeases + k] = 0; leaseExpiry[index * Self.maxLeases + k] = 0 }
        }
        nicMACs[index * 2] = port?.nic?.permanentMAC.rawValue ?? 0
        nicMACs[index * 2 + 1] = port?.nic?.currentMAC.rawValue ?? 0
    }

    /// The IPv4 leases snooped for a port (tests, `port get`).
    public func leases(of port: PortID, in sw: VirtualSwitch) -> [IPPrefix] {
        guard let index = sw.portIndex(of: port), index < capacity, let leaseAddress, let leaseExpiry else { return [] }
        return (0..<Self.maxLeases).compactMap { k in
            let a = leaseAddress[index * Self.maxLeases + k]
            return a != 0 && leaseExpiry[index * Self.maxLeases + k] > sw.now ? IPPrefix(ipv4: a) : nil
        }
    }

    @inline(__always)
    private func allowsIPv4(_ s: Int, _ address: UInt32, now: UInt64) -> Bool {
        guard let v4Count, let v4, let leaseAddress, let leaseExpiry else { return false }
        let base = s * Self.maxPrefixes * 2
        for k in 0..<Int(v4Count[s]) where address & v4[base + 2 * k + 1] == v4[base + 2 * k] { return true }
        for k in 0..<Self.maxLeases where leaseAddress[s * Self.maxLeases + k] == address && leaseExpiry[s * Self.maxLeases + k] > now {
            return true
        }
        return false
    }

    @inline(__always)
    private func allowsIPv6(_ s: Int, _ high: UInt64, _ low: UInt64) -> Bool {
        guard let v6Count, let v6 else { return false }
        if PacketFields.isLinkLocal6(high) { return true }
        let base = s * Self.maxPrefixes * 4
        for k in 0..<Int(v6Count[s]) {
            let b = base + 4 * k
            if high & v6[b + 2] == v6[b] && low & v6[b + 3] == v6[b + 1] { return true }
        }
        return false
    }

    override public func ingress(_ context: inout IngressContext) {
        guard on.onCount > 0 else { return }
        let batch = context.batch
        let now = context.sw.now
        for i in context.frames where context.isLive(i) {
            let s = batch.sourcePortIndex(i)
            guard on[s] else { continue }
            let h = batch.parsed(i)
            let p = UnsafeRawPointer(batch.frame(i))
            let l3 = Int(h.l3Offset)
            switch h.etherType {
            case EtherType.ipv4:
                let source = PacketFields.u32(p, l3 + 12)  // the parser checked the 20-byte header
                if source == 0 {
                    // A DHCP client before it has an address: only towards the DHCP server port.
                    guard case .header(PacketFields.udp, let offset, let end) = PacketFields.transport(batch, i, h),
                          offset + 4 <= end, PacketFields.u16(p, offset + 2) == 67 else {
                        context.drop(i, reason: ipv4Reason)
                        droppedIPv4 &+= 1
                        continue
                    }
                } else if !allowsIPv4(s, source, now: now) {
                    context.drop(i, reason: ipv4Reason)
                    droppedIPv4 &+= 1
                }
            case EtherType.arp:
                guard let arp = batch.arp(i) else {
                    context.drop(i, reason: arpReason)  // not Ethernet/IPv4 ARP: nothing to check it against
                    droppedARP &+= 1
                    continue
                }
                if arp.senderMAC != h.source || (arp.senderIP != 0 && !allowsIPv4(s, arp.senderIP, now: now)) {
                    context.drop(i, reason: arpReason)
                    droppedARP &+= 1
                }
            case EtherType.ipv6:
                let high = PacketFields.u64(p, l3 + 8), low = PacketFields.u64(p, l3 + 16)
                if !(high == 0 && low == 0) && !allowsIPv6(s, high, low) {
                    context.drop(i, reason: ipv6Reason)
                    droppedIPv6 &+= 1
                    continue
                }
                switch PacketFields.transport(batch, i, h) {
                case .unreadable:
                    context.drop(i, reason: unreadableReason)
                    droppedUnreadable &+= 1
                case .header(PacketFields.icmpv6, let offset, let end):
                    guard offset + 1 <= end else {
                        context.drop(i, reason: unreadableReason)
                        droppedUnreadable &+= 1
                        continue
                    }
                    guard PacketFields.u8(p, offset) == 136 else { continue }  // neighbour advertisement
                    guard offset + 24 <= end else {
                        context.drop(i, reason: unreadableReason)
                        droppedUnreadable &+= 1
                        continue
                    }
                    if !allowsIPv6(s, PacketFields.u64(p, offset + 8), PacketFields.u64(p, offset + 16)) {
                        context.drop(i, reason: ndReason)
                        droppedND &+= 1
                    }
                default:
                    continue
                }
            default:
                continue
            }
        }
    }

    /// DHCP snooping: an ACK on its way to a snooping port, for that port's NIC, grants the address.
    override public func egress(_ context: inout EgressContext) {
        guard snooping.onCount > 0, let nicMACs else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let h = batch.parsed(i)
            guard h.etherType == EtherType.ipv4,
                  case .header(PacketFields.udp, let offset, let end) = PacketFields.transport(batch, i, h) else { continue }
            let p = UnsafeRawPointer(batch.frame(i))
            guard offset + 8 <= end, PacketFields.u16(p, offset) == 67, PacketFields.u16(p, offset + 2) == 68 else { continue }
            guard let ack = Self.dhcpAck(p, bootp: offset + 8, end: end) else { continue }
            for d in context.destinations(i) where !d.isExcluded && snooping[d.portIndex] {
                let k = d.portIndex
                if ack.clientMAC == nicMACs[k * 2] || ack.clientMAC == nicMACs[k * 2 + 1] {
                    grant(k, ack.address, until: context.sw.now &+ min(ack.lease, Self.maxLease))
                }
            }
        }
    }

    private func grant(_ index: Int, _ address: UInt32, until expiry: UInt64) {
        guard let leaseAddress, let leaseExpiry else { return }
        let base = index * Self.maxLeases
        // The same address renews; otherwise the slot that expires first is replaced.
        var slot = 0
        for k in 0..<Self.maxLeases {
            if leaseAddress[base + k] == address { slot = k; break }
            if leaseExpiry[base + k] < leaseExpiry[base + slot] { slot = k }
        }
        leaseAddress[base + slot] = address
        leaseExpiry[base + slot] = expiry
        snoopedLeases &+= 1
    }

    /// A DHCPv4 ACK's granted address, client MAC and lease time, read from the BOOTP message at
    /// `bootp`; nil for anything else or when it is cut short.
    static func dhcpAck(_ p: UnsafeRawPointer, bootp b: Int, end: Int) -> (address: UInt32, clientMAC: UInt64, lease: UInt64)? {
        guard b + 240 <= end, PacketFields.u8(p, b) == 2, PacketFields.u8(p, b + 1) == 1, PacketFields.u8(p, b + 2) == 6,
              PacketFields.u32(p, b + 236) == 0x6382_5363 else { return nil }
        let address = PacketFields.u32(p, b + 16)
        guard address != 0 else { return nil }
        let mac = MACAddress(bytes: p + b + 28).rawValue
        var type: UInt8 = 0
        var lease = defaultLease
        var o = b + 240
        while o < end {
            let code = PacketFields.u8(p, o)
            if code == 255 { break }
            if code == 0 { o += 1; continue }
            guard o + 2 <= end else { return nil }
            let length = Int(PacketFields.u8(p, o + 1))
            guard o + 2 + length <= end else { return nil }
            if code == 53 && length == 1 { type = PacketFields.u8(p, o + 2) }
            if code == 51 && length == 4 { lease = UInt64(PacketFields.u32(p, o + 2)) }
            o += 2 + length
        }
        return type == 5 ? (address, mac, lease) : nil
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("guarded-ports", UInt64(on.onCount)), ExtensionCounter("snooping-ports", UInt64(snooping.onCount)),
         ExtensionCounter("dropped-ipv4", droppedIPv4), ExtensionCounter("dropped-arp", droppedARP),
         ExtensionCounter("dropped-ipv6", droppedIPv6), ExtensionCounter("dropped-nd", droppedND),
         ExtensionCounter("dropped-unreadable", droppedUnreadable), ExtensionCounter("snooped-leases", snoopedLeases)]
    }
}
