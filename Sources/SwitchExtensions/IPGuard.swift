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
/// MAC adds the acknowledged address for the lease time, and a DHCPv6 REPLY delivered to the NIC's
/// MAC adds each IA_NA address for its valid lifetime (a valid lifetime of 0 withdraws it); at most
/// ``maxLeases`` of each family per port, the one expiring first replaced.
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
    private var lease6Address: UnsafeMutablePointer<UInt64>?  // (high, low)
    private var lease6Expiry: UnsafeMutablePointer<UInt64>?
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
    private var restoredLeases: UInt64 = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.flag("vm-default", extension: Self.extensionName, default: false)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    deinit { free() }

    private func free() {
        v4Count?.deallocate(); v4?.deallocate(); v6Count?.deallocate(); v6?.deallocate()
        leaseAddress?.deallocate(); leaseExpiry?.deallocate(); nicMACs?.deallocate()
        lease6Address?.deallocate(); lease6Expiry?.deallocate()
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
        lease6Address = .allocate(capacity: n * Self.maxLeases * 2); lease6Address?.initialize(repeating: 0, count: n * Self.maxLeases * 2)
        lease6Expiry = .allocate(capacity: n * Self.maxLeases); lease6Expiry?.initialize(repeating: 0, count: n * Self.maxLeases)
        nicMACs = .allocate(capacity: n * 2); nicMACs?.initialize(repeating: 0, count: n * 2)
        ipv4Reason = sw.registerDropReason("IPv4 source address not allowed (ip-guard)")
        arpReason = sw.registerDropReason("ARP sender not allowed (ip-guard)")
        ipv6Reason = sw.registerDropReason("IPv6 source address not allowed (ip-guard)")
        ndReason = sw.registerDropReason("neighbour advertisement for an address not allowed (ip-guard)")
        unreadableReason = sw.registerDropReason("unreadable IP headers on a guarded port (ip-guard)")
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard let v4Count, let v4, let v6Count, let v6, let leaseAddress, let leaseExpiry, let lease6Address, let lease6Expiry,
              let nicMACs else { return }
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
            for k in 0..<Self.maxLeases {
                let slot = index * Self.maxLeases + k
                leaseAddress[slot] = 0; leaseExpiry[slot] = 0
                lease6Address[slot * 2] = 0; lease6Address[slot * 2 + 1] = 0; lease6Expiry[slot] = 0
            }
        }
        nicMACs[index * 2] = port?.nic?.permanentMAC.rawValue ?? 0
        nicMACs[index * 2 + 1] = port?.nic?.currentMAC.rawValue ?? 0
    }

    /// The leases snooped for a port and in force, IPv4 then IPv6 (tests, `port get`).
    public func leases(of port: PortID, in sw: VirtualSwitch) -> [IPPrefix] {
        guard let index = sw.portIndex(of: port), index < capacity, let leaseAddress, let leaseExpiry,
              let lease6Address, let lease6Expiry else { return [] }
        let v4: [IPPrefix] = (0..<Self.maxLeases).compactMap { k in
            let a = leaseAddress[index * Self.maxLeases + k]
            return a != 0 && leaseExpiry[index * Self.maxLeases + k] > sw.now ? IPPrefix(ipv4: a) : nil
        }
        let v6: [IPPrefix] = (0..<Self.maxLeases).compactMap { k in
            let slot = index * Self.maxLeases + k
            return lease6Expiry[slot] > sw.now ? IPPrefix(ipv6: lease6Address[slot * 2], lease6Address[slot * 2 + 1]) : nil
        }
        return v4 + v6
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
    private func allowsIPv6(_ s: Int, _ high: UInt64, _ low: UInt64, now: UInt64) -> Bool {
        guard let v6Count, let v6, let lease6Address, let lease6Expiry else { return false }
        if PacketFields.isLinkLocal6(high) { return true }
        let base = s * Self.maxPrefixes * 4
        for k in 0..<Int(v6Count[s]) {
            let b = base + 4 * k
            if high & v6[b + 2] == v6[b] && low & v6[b + 3] == v6[b + 1] { return true }
        }
        for k in 0..<Self.maxLeases {
            let slot = s * Self.maxLeases + k
            if lease6Expiry[slot] > now && lease6Address[slot * 2] == high && lease6Address[slot * 2 + 1] == low { return true }
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
                if !(high == 0 && low == 0) && !allowsIPv6(s, high, low, now: now) {
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
                    if !allowsIPv6(s, PacketFields.u64(p, offset + 8), PacketFields.u64(p, offset + 16), now: now) {
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

    /// DHCP snooping: an ACK (DHCPv4) or REPLY (DHCPv6) on its way to a snooping port, for that
    /// port's NIC, grants the addresses in it.
    override public func egress(_ context: inout EgressContext) {
        guard snooping.onCount > 0, let nicMACs else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let h = batch.parsed(i)
            guard h.etherType == EtherType.ipv4 || h.etherType == EtherType.ipv6,
                  case .header(PacketFields.udp, let offset, let end) = PacketFields.transport(batch, i, h) else { continue }
            let p = UnsafeRawPointer(batch.frame(i))
            if h.etherType == EtherType.ipv6 {
                // Server (or relay) to client; the REPLY goes to the client's link-local unicast
                // address, so its Ethernet destination names the NIC (a DUID need not hold a MAC).
                guard offset + 8 <= end, PacketFields.u16(p, offset) == 547, PacketFields.u16(p, offset + 2) == 546,
                      Self.isWellFormedReply6(p, message: offset + 8, end: end) else { continue }
                let client = h.destination.rawValue
                for d in context.destinations(i) where !d.isExcluded && snooping[d.portIndex] {
                    let k = d.portIndex
                    if client == nicMACs[k * 2] || client == nicMACs[k * 2 + 1] {
                        snoopReply6(p, message: offset + 8, end: end, port: k, now: context.sw.now)
                    }
                }
                continue
            }
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

    private func grant(_ index: Int, _ address: UInt32, until expiry: UInt64, snooped: Bool = true) {
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
        if snooped { snoopedLeases &+= 1 } else { restoredLeases &+= 1 }
    }

    /// True for a DHCPv6 REPLY (type 7) at `m` whose options, and those inside each IA_NA, all lie
    /// within the packet: anything cut short or lying grants nothing.
    static func isWellFormedReply6(_ p: UnsafeRawPointer, message m: Int, end: Int) -> Bool {
        guard m + 4 <= end, PacketFields.u8(p, m) == 7 else { return false }
        var o = m + 4
        while o < end {
            guard o + 4 <= end else { return false }
            let code = PacketFields.u16(p, o), body = o + 4, next = body + Int(PacketFields.u16(p, o + 2))
            guard next <= end else { return false }
            if code == 3 {  // IA_NA: IAID, T1, T2, then its own options
                guard body + 12 <= next else { return false }
                var a = body + 12
                while a < next {
                    guard a + 4 <= next else { return false }
                    a += 4 + Int(PacketFields.u16(p, a + 2))
                }
                guard a == next else { return false }
            }
            o = next
        }
        return true
    }

    /// Grants port `k` each IAADDR of each IA_NA of a well-formed REPLY (see ``isWellFormedReply6``)
    /// for its valid lifetime; a lifetime of 0 withdraws the address, and an IA_NA whose status is
    /// not success grants nothing.
    private func snoopReply6(_ p: UnsafeRawPointer, message m: Int, end: Int, port k: Int, now: UInt64) {
        var o = m + 4
        while o < end {
            let code = PacketFields.u16(p, o), body = o + 4, next = body + Int(PacketFields.u16(p, o + 2))
            defer { o = next }
            guard code == 3 else { continue }
            var failed = false
            var a = body + 12
            while a < next {  // status code option (13): 2-byte status, 0 = success
                let length = Int(PacketFields.u16(p, a + 2))
                if PacketFields.u16(p, a) == 13 && (length < 2 || PacketFields.u16(p, a + 4) != 0) { failed = true }
                a += 4 + length
            }
            guard !failed else { continue }
            a = body + 12
            while a < next {
                let length = Int(PacketFields.u16(p, a + 2))
                // IAADDR: address, preferred lifetime, valid lifetime (then its options).
                if PacketFields.u16(p, a) == 5 && length >= 24 {
                    let high = PacketFields.u64(p, a + 4), low = PacketFields.u64(p, a + 12)
                    let valid = UInt64(PacketFields.u32(p, a + 24))
                    // Only a unicast, global-scope address means anything as a source.
                    if !(high == 0 && low == 0) && high >> 56 != 0xFF && !PacketFields.isLinkLocal6(high) {
                        grant6(k, high, low, until: valid == 0 ? 0 : now &+ min(valid, Self.maxLease))
                    }
                }
                a += 4 + length
            }
        }
    }

    private func grant6(_ index: Int, _ high: UInt64, _ low: UInt64, until expiry: UInt64, snooped: Bool = true) {
        guard let lease6Address, let lease6Expiry else { return }
        let base = index * Self.maxLeases
        var slot = 0
        var found = false
        for k in 0..<Self.maxLeases {
            if lease6Address[(base + k) * 2] == high && lease6Address[(base + k) * 2 + 1] == low { slot = k; found = true; break }
            if lease6Expiry[base + k] < lease6Expiry[base + slot] { slot = k }
        }
        if expiry == 0 {  // withdrawn
            if found { lease6Expiry[base + slot] = 0 }
            return
        }
        lease6Address[(base + slot) * 2] = high
        lease6Address[(base + slot) * 2 + 1] = low
        lease6Expiry[base + slot] = expiry
        if snooped { snoopedLeases &+= 1 } else { restoredLeases &+= 1 }
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

    // MARK: - NIC save/restore

    /// The leases DHCP snooping granted the NIC, with the seconds each has left (they belong to the NIC,
    /// not the port's settings, so they must travel with it: a migrated VM keeps its address without
    /// asking its DHCP server again). Version 1: `n4`, n4 x (address, seconds left), `n6`,
    /// n6 x (address high, low, seconds left); big-endian.
    override public func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState? {
        guard let index = sw.portIndex(of: port.id), index < capacity, let leaseAddress, let leaseExpiry,
              let lease6Address, let lease6Expiry else { return nil }
        let now = sw.now
        var v4: [(UInt32, UInt32)] = []
        var v6: [(UInt64, UInt64, UInt32)] = []
        for k in 0..<Self.maxLeases {
            let slot = index * Self.maxLeases + k
            if leaseAddress[slot] != 0 && leaseExpiry[slot] > now {
                v4.append((leaseAddress[slot], UInt32(clamping: leaseExpiry[slot] - now)))
            }
            if lease6Expiry[slot] > now {
                v6.append((lease6Address[slot * 2], lease6Address[slot * 2 + 1], UInt32(clamping: lease6Expiry[slot] - now)))
            }
        }
        guard !v4.isEmpty || !v6.isEmpty else { return nil }
        var data: [UInt8] = [UInt8(v4.count)]
        for (address, left) in v4 { Self.append(&data, UInt64(address), bytes: 4); Self.append(&data, UInt64(left), bytes: 4) }
        data.append(UInt8(v6.count))
        for (high, low, left) in v6 {
            Self.append(&data, high, bytes: 8); Self.append(&data, low, bytes: 8); Self.append(&data, UInt64(left), bytes: 4)
        }
        return SavedNICState(extensionName: name, version: 1, data: data)
    }

    /// Grants the saved leases again for the time they had left (capped like a snooped one); refuses
    /// another version or a blob that does not parse, granting nothing.
    override public func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool {
        guard state.version == 1, let index = sw.portIndex(of: port.id), index < capacity else { return false }
        let d = state.data
        var o = 0
        func read(_ bytes: Int) -> UInt64? {
            guard o + bytes <= d.count else { return nil }
            defer { o += bytes }
            return d[o..<o + bytes].reduce(0) { $0 << 8 | UInt64($1) }
        }
        var v4: [(UInt32, UInt64)] = []
        var v6: [(UInt64, UInt64, UInt64)] = []
        guard let n4 = read(1), n4 <= Self.maxLeases else { return false }
        for _ in 0..<n4 {
            guard let address = read(4), let left = read(4), address != 0 else { return false }
            v4.append((UInt32(address), left))
        }
        guard let n6 = read(1), n6 <= Self.maxLeases else { return false }
        for _ in 0..<n6 {
            guard let high = read(8), let low = read(8), let left = read(4) else { return false }
            v6.append((high, low, left))
        }
        guard o == d.count else { return false }
        let now = sw.now
        for (address, left) in v4 where left > 0 { grant(index, address, until: now &+ min(left, Self.maxLease), snooped: false) }
        for (high, low, left) in v6 where left > 0 { grant6(index, high, low, until: now &+ min(left, Self.maxLease), snooped: false) }
        return true
    }

    private static func append(_ data: inout [UInt8], _ value: UInt64, bytes: Int) {
        for shift in stride(from: (bytes - 1) * 8, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    /// Guarded and snooping ports need every frame: the fast path does not look at IP addresses.
    override public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission {
        guard let index = sw.portIndex(of: port), on[index] || snooping[index] else { return .allowed }
        return .mustSeeEveryFrame(reason: "checks IP, ARP and ND source addresses")
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("guarded-ports", UInt64(on.onCount)), ExtensionCounter("snooping-ports", UInt64(snooping.onCount)),
         ExtensionCounter("dropped-ipv4", droppedIPv4), ExtensionCounter("dropped-arp", droppedARP),
         ExtensionCounter("dropped-ipv6", droppedIPv6), ExtensionCounter("dropped-nd", droppedND),
         ExtensionCounter("dropped-unreadable", droppedUnreadable), ExtensionCounter("snooped-leases", snoopedLeases),
         ExtensionCounter("restored-leases", restoredLeases)]
    }
}
