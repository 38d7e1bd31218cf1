import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("Built-in learning switch")
struct LearningTests {
    func three(_ es: EmbeddedSwitch) throws -> (PortID, PortID, PortID) {
        (try es.addPort("a", mac: mac(1)), try es.addPort("b", mac: mac(2)), try es.addPort("c", mac: mac(3)))
    }

    @Test("Unicast to a learned address goes only to the learned port")
    func learnedUnicast() throws {
        let es = EmbeddedSwitch()
        let (a, b, c) = try three(es)
        es.learn(b, mac(2))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b) == [frame(mac(2), mac(1))])
        #expect(es.take(c).isEmpty)
        #expect(es.take(a).isEmpty)
        #expect(es.sw.macEntries().contains { $0.mac == mac(2) && $0.port == b })
    }

    @Test("Unknown unicast floods to every connected NIC but the source")
    func unknownFloods() throws {
        let es = EmbeddedSwitch()
        let (a, b, c) = try three(es)
        es.send(from: a, frame(mac(9), mac(1)))
        #expect(es.take(a).isEmpty)
        #expect(es.take(b).count == 1)
        #expect(es.take(c).count == 1)
    }

    @Test("unknownUnicast = .uplink: only the uplink gets it; dropped without one or from it")
    func unknownToUplink() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 16, batchCapacity: 16, unknownUnicast: .uplink))
        let (a, b, _) = try three(es)
        es.send(from: a, frame(mac(9), mac(1)))
        #expect(es.take(b).isEmpty)
        #expect(es.dropCount(a, .ingress, .unknownUnicastNoUplink) == 1)

        let up = try es.addPort("uplink", mac: mac(100), type: .external)
        es.send(from: a, frame(mac(9), mac(1)))
        #expect(es.take(up).count == 1)
        #expect(es.take(b).isEmpty)
        // Known unicast is unaffected by the policy.
        es.learn(b, mac(2))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).count == 1)
        #expect(es.take(up).isEmpty)
        // Unknown unicast from the uplink itself is dropped (never reflected back).
        es.send(from: up, frame(mac(9), mac(100)))
        #expect(es.take(a).isEmpty && es.take(b).isEmpty)
        #expect(es.dropCount(up, .ingress, .unknownUnicastNoUplink) == 1)
        // The policy can change at run time.
        es.sw.unknownUnicast = .flood
        es.send(from: a, frame(mac(9), mac(1)))
        #expect(es.take(b).count == 1 && es.take(up).count == 1)
    }

    @Test("Broadcast and multicast go to every connected NIC except the source")
    func broadcastMulticast() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 16, batchCapacity: 16, unknownUnicast: .uplink))
        let (a, b, c) = try three(es)
        let ipv6Multicast = MACAddress(0x33, 0x33, 0, 0, 0, 1)
        es.send(from: a, [frame(.broadcast, mac(1)), frame(ipv6Multicast, mac(1))])
        #expect(es.take(a).isEmpty)
        #expect(es.take(b).count == 2)
        #expect(es.take(c).count == 2)
    }

    @Test("Aging: an address not seen for longer than macAgingSeconds is forgotten")
    func aging() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 16, batchCapacity: 16, macAgingSeconds: 300))
        let (a, b, c) = try three(es)
        es.learn(b, mac(2))
        es.advance(seconds: 300)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(c).isEmpty, "still learned at exactly the aging time")
        #expect(es.take(b).count == 1)
        es.advance(seconds: 1)
        #expect(!es.sw.macEntries().contains { $0.mac == mac(2) })
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(c).count == 1, "aged out: floods again")
        #expect(es.take(b).count == 1)
    }

    @Test("Traffic refreshes an entry: a talking host does not age out")
    func refresh() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(maxPorts: 16, batchCapacity: 16, macAgingSeconds: 10))
        let (a, b, c) = try three(es)
        for _ in 0..<5 {
            es.learn(b, mac(2))
            es.advance(seconds: 8)
        }
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).count == 1)
        #expect(es.take(c).isEmpty)
    }

    @Test("A MAC flood from one port cannot evict or block the others")
    func macFlood() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(
            maxPorts: 16, batchCapacity: 32, macTableSize: 4096, macLimitPerPort: 512, unknownUnicast: .uplink))
        let (a, b, c) = try three(es)
        es.learn(b, mac(2))
        var batch: [[UInt8]] = []
        for n in 0..<10_000 {
            let src = MACAddress(rawValue: 0x0200_1000_0000 + UInt64(n))
            batch.append(frame(mac(99), src))  // unknown unicast, no uplink: dropped, but the source is learned
            if batch.count == 32 { es.send(from: a, batch); batch.removeAll() }
        }
        es.send(from: a, batch)
        let entries = es.sw.macEntries()
        #expect(entries.filter { $0.port == a }.count == 512)
        #expect(entries.contains { $0.mac == mac(2) && $0.port == b }, "b's address was evicted")
        es.learn(c, mac(3))
        #expect(es.sw.macEntries().contains { $0.mac == mac(3) && $0.port == c }, "c could not learn")
        es.send(from: b, frame(mac(3), mac(2)))
        #expect(es.take(c).count == 1)
    }

    @Test("The total table limit refuses new addresses instead of evicting old ones")
    func tableLimit() throws {
        let es = EmbeddedSwitch(configuration: SwitchConfiguration(
            maxPorts: 16, batchCapacity: 32, macTableSize: 40, macLimitPerPort: 1000, unknownUnicast: .uplink))
        let (a, b, _) = try three(es)
        es.learn(b, mac(2))
        let flood = (0..<30).map { frame(mac(99), MACAddress(rawValue: 0x0200_1000_0000 + UInt64($0))) }
        es.send(from: a, flood)
        es.send(from: a, flood.map { f in var g = f; g[11] ^= 0x80; return g })
        #expect(es.sw.macEntries().count == 40)
        #expect(es.sw.macEntries().contains { $0.mac == mac(2) && $0.port == b })
    }

    @Test("A MAC seen on another port moves there at once (a VM migrated in from behind the uplink)")
    func instantMove() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        let b = try es.addPort("uplink", mac: mac(2), type: .external)
        let c = try es.addPort("c", mac: mac(3))
        es.learn(b, mac(7))
        es.send(from: a, frame(mac(7), mac(1)))
        #expect(es.take(b).count == 1)
        es.learn(c, mac(7))  // the VM migrated behind c
        es.send(from: a, frame(mac(7), mac(1)))
        #expect(es.take(c).count == 1)
        #expect(es.take(b).isEmpty)
        #expect(es.sw.macEntries().filter { $0.mac == mac(7) }.map(\.port) == [c])
    }

    @Test("A MAC learned on a VM port is pinned: another port using it does not move it, until the VM's NIC goes")
    func pinnedToVMPort() throws {
        let es = EmbeddedSwitch()
        let (a, b, c) = try three(es)
        let uplink = try es.addPort("uplink", mac: mac(9), type: .external)
        es.learn(b, mac(2))
        es.learn(c, mac(2))       // another VM claims b's MAC
        es.learn(uplink, mac(2))  // and so does something behind the uplink
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(b).count == 1, "the owner still receives its frames")
        #expect(es.take(c).isEmpty && es.take(uplink).isEmpty)
        #expect(es.sw.macTable.pinnedMovesRefused == 2)
        try es.sw.disconnectNIC(on: b)  // the VM stops (or migrates out): its addresses are free again
        es.learn(uplink, mac(2))
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(uplink).count == 1)
    }

    @Test("Addresses learned on a port are flushed when its NIC disconnects")
    func flushOnDisconnect() throws {
        let es = EmbeddedSwitch()
        let (a, b, c) = try three(es)
        es.learn(b, mac(2))
        es.learn(b, mac(22))
        try es.sw.disconnectNIC(on: b)
        #expect(!es.sw.macEntries().contains { $0.port == b })
        try es.sw.connectNIC(on: b)
        es.send(from: a, frame(mac(2), mac(1)))
        #expect(es.take(c).count == 1, "stale entry survived the disconnect")
        #expect(es.take(b).count == 1)
    }

    @Test("A frame addressed to its own source port is dropped with a reason")
    func destinationIsSource() throws {
        let es = EmbeddedSwitch()
        let (a, b, c) = try three(es)
        es.learn(a, mac(1))
        es.learn(a, mac(11))
        es.send(from: a, frame(mac(11), mac(1)))
        #expect(es.take(a).isEmpty && es.take(b).isEmpty && es.take(c).isEmpty)
        #expect(es.dropCount(a, .ingress, .destinationIsSource) == 1)
        #expect(es.drops.last?.reason == es.sw.text(of: .destinationIsSource))
        #expect(es.drops.last?.port == a)
        #expect(es.drops.last?.reporter == "core:forwarding")
    }
}

@Suite("MAC table")
struct MACTableTests {
    @Test("Randomised learn/flush/expire against a dictionary model")
    func modelCheck() {
        var rng = SplitMix64(seed: 0x5EED)
        let table = MACTable(limit: 200, perPortLimit: 80, agingTime: 50, portSlots: 4)
        struct Key: Hashable { let mac: UInt64; let vlan: UInt16 }
        var model: [Key: (slot: UInt16, seen: UInt64)] = [:]
        var now: UInt64 = 0
        for step in 0..<20_000 {
            let op = rng.next() % 100
            // A small address space so moves and refreshes happen often.
            let key = Key(mac: 0x0200_0000_0000 | (rng.next() % 400), vlan: UInt16(rng.next() % 3))
            let slot = UInt16(rng.next() % 4)
            if op < 80 {
                let learned = table.learn(MACAddress(rawValue: key.mac), vlan: key.vlan, port: PortID(UInt32(slot) + 1), slot: slot, now: now)
                let perSlot = model.values.filter { $0.slot == slot }.count
                if let old = model[key] {
                    if old.slot == slot || perSlot < 80 {
                        model[key] = (slot, now)
                        #expect(learned, "step \(step)")
                    } else {
                        #expect(!learned, "step \(step)")
                    }
                } else if model.count < 200 && perSlot < 80 {
                    model[key] = (slot, now)
                    #expect(learned, "step \(step)")
                } else {
                    #expect(!learned, "step \(step)")
                }
            } else if op < 83 {
                table.flush(portSlot: slot)
                model = model.filter { $0.value.slot != slot }
            } else if op < 90 {
                now += rng.next() % 20
                table.expire(now: now)
                model = model.filter { now - $0.value.seen <= 50 }
            } else {
                let hit = table.lookup(MACAddress(rawValue: key.mac), vlan: key.vlan, now: now)
                #expect(hit?.slot == model[key]?.slot, "step \(step)")
            }
            if step % 1000 == 0 {
                #expect(table.count == model.count, "step \(step)")
                for s in UInt16(0)..<4 {
                    #expect(table.entries(onSlot: s) == model.values.filter { $0.slot == s }.count, "step \(step)")
                }
            }
        }
        for (key, value) in model {
            #expect(table.lookup(MACAddress(rawValue: key.mac), vlan: key.vlan, now: now)?.slot == value.slot)
        }
        #expect(table.count == model.count)
    }

    @Test("The all-zero MAC is never learned and does not corrupt per-port counts")
    func zeroMAC() {
        let table = MACTable(limit: 16, perPortLimit: 2, agingTime: 100, portSlots: 4)
        #expect(!table.learn(MACAddress(rawValue: 0), vlan: 0, port: PortID(2), slot: 1, now: 0))
        #expect(table.entries(onSlot: 0) == 0)
        #expect(table.entries(onSlot: 1) == 0)
        #expect(table.count == 0)
        // Slot 1 still has its full allowance of two addresses.
        #expect(table.learn(MACAddress(rawValue: 0x0200_0000_0001), vlan: 0, port: PortID(2), slot: 1, now: 0))
        #expect(table.learn(MACAddress(rawValue: 0x0200_0000_0002), vlan: 0, port: PortID(2), slot: 1, now: 0))
        #expect(table.entries(onSlot: 1) == 2)
        #expect(table.lookup(MACAddress(rawValue: 0), vlan: 0, now: 0) == nil)
    }
}
