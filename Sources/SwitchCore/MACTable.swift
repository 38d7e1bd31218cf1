/// The learning switch's MAC table: (MAC, VLAN) → port, with aging and limits.
///
/// Open addressing with linear probing over storage allocated once, keyed by a `UInt64` that packs
/// the VLAN above the 48-bit MAC, so a lookup hashes one integer and allocates nothing. A full
/// table (or a port at its own limit) refuses new addresses instead of evicting old ones: a MAC
/// flood from one VM cannot push the others out. Deletion uses backward shifting, so there are no
/// tombstones to degrade probing.
public final class MACTable {
    public struct Entry: Sendable, Equatable {
        public let mac: MACAddress
        public let vlan: VLANID
        public let port: PortID
        /// Seconds since the entry was last refreshed.
        public let age: UInt64
    }

    @usableFromInline struct Slot {
        @usableFromInline var key: UInt64      // 0 = empty (a zero MAC is never learned)
        @usableFromInline var port: PortID
        @usableFromInline var portSlot: UInt16
        @usableFromInline var lastSeen: UInt64
    }

    public let capacity: Int
    public let limit: Int
    public var perPortLimit: Int
    public var agingTime: UInt64
    public private(set) var count = 0
    @usableFromInline let mask: Int
    @usableFromInline let slots: UnsafeMutablePointer<Slot>
    /// Entries per dense port slot, for the per-port limit.
    @usableFromInline var perPort: UnsafeMutablePointer<Int32>
    /// Per dense port slot: addresses learned there cannot move to another port while they live.
    @usableFromInline var pinned: UnsafeMutablePointer<Bool>
    /// Per dense port slot: its own limit (0: ``perPortLimit`` only).
    @usableFromInline var slotLimit: UnsafeMutablePointer<Int32>
    /// Times a frame's source address was not moved because it is pinned to another port.
    public private(set) var pinnedMovesRefused: UInt64 = 0
    /// Called for each address removed (aged, flushed) or moved to another port: the switch's
    /// fast-path entries for it are stale.
    public var onForget: ((MACAddress, VLANID) -> Void)?
    /// Times a known address moved to another port (a VM migrated, or a loop/spoofing suspect).
    public private(set) var moves: UInt64 = 0
    let portSlots: Int

    public init(limit: Int, perPortLimit: Int, agingTime: UInt64, portSlots: Int) {
        var size = 16
        while size < limit * 2 { size <<= 1 }
        capacity = size
        mask = size - 1
        self.limit = limit
        self.perPortLimit = perPortLimit
        self.agingTime = agingTime
        self.portSlots = portSlots
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(key: 0, port: .switchItself, portSlot: 0, lastSeen: 0), count: size)
        perPort = .allocate(capacity: portSlots)
        perPort.initialize(repeating: 0, count: portSlots)
        pinned = .allocate(capacity: portSlots)
        pinned.initialize(repeating: false, count: portSlots)
        slotLimit = .allocate(capacity: portSlots)
        slotLimit.initialize(repeating: 0, count: portSlots)
    }

    deinit {
        slots.deallocate()
        perPort.deallocate()
        pinned.deallocate()
        slotLimit.deallocate()
    }

    @inlinable @inline(__always)
    static func key(_ mac: MACAddress, _ vlan: VLANID) -> UInt64 { mac.rawValue | UInt64(vlan & 0x0FFF) << 48 }

    @inlinable @inline(__always)
    func home(_ key: UInt64) -> Int {
        // Fibonacci hashing spreads the sequential MACs that VMs get.
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    /// The port `mac` was learned on in `vlan`, if the entry exists and has not aged out.
    public func lookup(_ mac: MACAddress, vlan: VLANID, now: UInt64) -> (port: PortID, slot: UInt16)? {
        let k = Self.key(mac, vlan)
        var i = home(k)
        while true {
            let s = slots[i]
            if s.key == 0 { return nil }
            if s.key == k {
                return now &- s.lastSeen <= agingTime ? (s.port, s.portSlot) : nil
            }
            i = (i + 1) & mask
        }
    }

    /// Learns or refreshes `mac` on a port. A known MAC seen on another port moves at once (live
    /// migration), unless that port is at its limit or the MAC is pinned to its port. Returns false
    /// when the address was not learned.
    @discardableResult
    public func learn(_ mac: MACAddress, vlan: VLANID, port: PortID, slot: UInt16, now: UInt64) -> Bool {
        // Key 0 marks an empty slot: the zero MAC would "match" one and corrupt the per-port counts.
        guard !mac.isZero else { return false }
        let k = Self.key(mac, vlan)
        var i = home(k)
        while true {
            let s = slots[i]
            if s.key == k {
                if s.portSlot != slot {
                    if pinned[Int(s.portSlot)] {
                        pinnedMovesRefused &+= 1
                        return false
                    }
                    guard perPort[Int(slot)] < limit(of: slot) else { return false }
                    perPort[Int(s.portSlot)] -= 1
                    perPort[Int(slot)] += 1
                    onForget?(mac, vlan)
                    moves &+= 1
                    slots[i].port = port
                    slots[i].portSlot = slot
                }
                slots[i].lastSeen = now
                return true
            }
            if s.key == 0 { break }
            i = (i + 1) & mask
        }
        guard count < limit, perPort[Int(slot)] < limit(of: slot) else { return false }
        slots[i] = Slot(key: k, port: port, portSlot: slot, lastSeen: now)
        count += 1
        perPort[Int(slot)] += 1
        return true
    }

    @inline(__always)
    func limit(of slot: UInt16) -> Int32 {
        let own = slotLimit[Int(slot)]
        let all = Int32(clamping: perPortLimit)
        return own > 0 && own < all ? own : all
    }

    /// Sets a port slot's own MAC limit (nil: the switch-wide per-port limit only). A port above
    /// its new limit is flushed, so the limit holds at once; it relearns up to the limit.
    public func setLimit(slot: UInt16, _ limit: Int?) {
        slotLimit[Int(slot)] = Int32(clamping: limit ?? 0)
        if perPort[Int(slot)] > self.limit(of: slot) { flush(portSlot: slot) }
    }

    /// Pins (or unpins) the addresses learned on a port slot: while such an entry lives, the same
    /// MAC seen on another port does not move it. The switch pins VM ports.
    public func setPinned(slot: UInt16, _ on: Bool) { pinned[Int(slot)] = on }

    /// Removes entries older than the aging time. Call periodically (the packet loop does once a second).
    public func expire(now: UInt64) {
        removeAll { now &- $0.lastSeen > agingTime }
    }

    /// Forgets every address learned on a port (NIC disconnect or port delete).
    public func flush(portSlot: UInt16) {
        guard perPort[Int(portSlot)] > 0 else { return }
        removeAll { $0.portSlot == portSlot }
    }

    public func removeAll() { removeAll { _ in true } }

    /// Number of entries learned on a port slot.
    public func entries(onSlot slot: UInt16) -> Int { Int(perPort[Int(slot)]) }

    public func entries(now: UInt64) -> [Entry] {
        var out: [Entry] = []
        for i in 0..<capacity where slots[i].key != 0 && now &- slots[i].lastSeen <= agingTime {
            let s = slots[i]
            out.append(Entry(mac: MACAddress(rawValue: s.key), vlan: VLANID(s.key >> 48), port: s.port, age: now &- s.lastSeen))
        }
        return out.sorted { ($0.vlan, $0.mac) < ($1.vlan, $1.mac) }
    }

    private func removeAll(where predicate: (Slot) -> Bool) {
        // A shift that wraps around can move an entry behind the scan; repeat until a pass is clean.
        while removePass(predicate) {}
    }

    private func removePass(_ predicate: (Slot) -> Bool) -> Bool {
        var removed = false
        var i = 0
        while i < capacity {
            if slots[i].key != 0 && predicate(slots[i]) {
                if let onForget { onForget(MACAddress(rawValue: slots[i].key & 0xFFFF_FFFF_FFFF), VLANID(slots[i].key >> 48)) }
                perPort[Int(slots[i].portSlot)] -= 1
                count -= 1
                removed = true
                deleteAndShift(i)
                // Re-examine i: shifting may have moved another entry into it.
            } else {
                i += 1
            }
        }
        return removed
    }

    /// Backward-shift deletion for linear probing.
    private func deleteAndShift(_ start: Int) {
        var hole = start
        var j = (start + 1) & mask
        while slots[j].key != 0 {
            let h = home(slots[j].key)
            // Move j into the hole if its home is not cyclically within (hole, j].
            let inRange = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j)
            if !inRange {
                slots[hole] = slots[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        slots[hole].key = 0
    }
}
