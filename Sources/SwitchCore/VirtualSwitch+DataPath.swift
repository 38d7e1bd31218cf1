/// Where the switch delivers frames: the data plane (sockets) or a test harness.
public protocol FrameSink: AnyObject {
    /// Delivers `frames` (indices into `batch`) to `port`, in order. Called once per destination
    /// port per batch, with every frame already in the form the port takes (VLAN tag pushed or
    /// popped). Returns how many were sent, counted from the front; the switch counts the rest as
    /// dropped with the result's reason.
    func transmit(_ batch: FrameBatch, to port: PortID, frames: UnsafeBufferPointer<UInt16>) -> TransmitResult
}

public struct TransmitResult: Sendable {
    public var sent: Int
    public var failure: DropReason
    /// Only the frame at index `sent` was refused (with `failure`: too large for the device, say);
    /// the frames after it were not tried, and the switch hands them over again in another call.
    /// False: every frame from `sent` on is dropped with `failure`.
    public var refusedOne: Bool
    public init(sent: Int, failure: DropReason = .transmitQueueFull, refusedOne: Bool = false) {
        self.sent = sent
        self.failure = failure
        self.refusedOne = refusedOne
    }
}

extension VirtualSwitch {
    /// Runs a batch of frames received from `port` through the switch: admission (parsing, VLAN
    /// classification, counters), ingress down the extension stack, forwarding, egress up the stack,
    /// and delivery to `sink`, grouped per destination port. Allocates nothing per frame.
    ///
    /// Frames `0..<batch.count` are taken as received from `port`. The batch can be reset and reused
    /// as soon as this returns.
    public func process(_ batch: FrameBatch, from port: PortID, to sink: any FrameSink) {
        checkCapacity(batch)
        let received = batch.count
        guard let r = records[port] else {
            // The port went away between the read and now: nothing to count against.
            batch.count = 0
            drainResumeQueue(into: batch)
            if batch.count > 0 { run(batch, sink) }
            releaseHeldReferences()
            return
        }
        let slot = r.slot
        let accepts = slots[Int(slot)].acceptsIngress
        for i in 0..<received {
            batch.sourcePort[i] = port
            batch.sourceSlot[i] = slot
            batch.sourceNIC[i] = 0
            batch.entryLevel[i] = 0
            batch.destinationCount[i] = 0
            batch.state[i] = .live
            slots[Int(slot)].framesIn &+= 1
            slots[Int(slot)].bytesIn &+= UInt64(batch.length[i])
            if !accepts {
                dropFrame(batch, i, direction: .ingress, reason: .sourceNotAccepting, reporter: Self.admission)
            } else {
                admit(batch, i)
            }
        }
        drainResumeQueue(into: batch)
        run(batch, sink)
        releaseHeldReferences()
        settleOffload()
    }

    /// Runs frames that extensions resumed (see ``resume(_:)``) when no traffic brings a batch.
    /// Returns the number of frames processed.
    @discardableResult
    public func processPending(_ batch: FrameBatch, to sink: any FrameSink) -> Int {
        guard !resumeQueue.isEmpty else { return 0 }
        checkCapacity(batch)
        batch.reset()
        drainResumeQueue(into: batch)
        let n = batch.count
        run(batch, sink)
        releaseHeldReferences()
        return n
    }

    /// The per-destination transmit lists are sized for `batchCapacity` frames: a bigger batch would
    /// overrun them. Use ``makeBatch(slotSize:)``.
    @inline(__always)
    func checkCapacity(_ batch: FrameBatch) {
        precondition(batch.capacity <= configuration.batchCapacity,
                     "batch capacity \(batch.capacity) exceeds the switch's batchCapacity \(configuration.batchCapacity)")
    }

    /// True when extensions have resumed frames waiting for ``processPending(_:to:)``.
    public var hasPendingFrames: Bool { !resumeQueue.isEmpty }

    /// Forgets MAC addresses older than the aging time.
    public func expireAddresses() {
        refreshOffloadedSources()
        macTable.expire(now: now)
        settleOffload()
    }

    // MARK: - Pended frames

    /// Puts a pended frame back on the data path, below the extension that pended it, in the next
    /// batch. Its NIC reference is released once it has been delivered or dropped.
    public func resume(_ frame: PendedFrame) {
        guard !frame.finished else { return }
        frame.finished = true
        resumeQueue.append(frame)
    }

    /// Completes (discards) a pended frame and releases its NIC reference.
    public func complete(_ frame: PendedFrame) {
        guard !frame.finished else { return }
        frame.finished = true
        releaseFrameReference(frame.source)
    }

    func pend(_ batch: FrameBatch, _ i: Int, level: Int16) -> PendedFrame {
        let mask = batch.contextMask[i]
        let contexts = mask == 0 ? [] : Array(UnsafeBufferPointer(start: batch.contexts + i * FrameBatch.contextSlots,
                                                                    count: FrameBatch.contextSlots))
        let p = PendedFrame(bytes: batch.copyBytes(i), vnetHeader: batch.virtioHeader(i), source: batch.sourcePort[i],
                            sourceNIC: batch.sourceNIC[i], destinations: Array(batch.destinations(i)), headers: batch.headers[i],
                            level: level, contextMask: mask, contexts: contexts)
        batch.state[i] = .pended
        if let r = records[p.source] { r.nicReferences += 1 }
        return p
    }

    /// Releases the NIC references of resumed frames once their batch has been delivered.
    func releaseHeldReferences() {
        guard !heldReferences.isEmpty else { return }
        let held = heldReferences
        heldReferences.removeAll(keepingCapacity: true)
        for source in held { releaseFrameReference(source) }
    }

    func releaseFrameReference(_ source: PortID) {
        if let r = records[source], r.nicReferences > 0 { releaseNICReference(r) }
    }

    func drainResumeQueue(into batch: FrameBatch) {
        while let p = resumeQueue.first, batch.count < batch.capacity {
            resumeQueue.removeFirst()
            // The frame is now in this batch (or was refused); either way it completes with it, so its
            // NIC reference is released after the batch is delivered (NIC_DELETE must not overtake it).
            heldReferences.append(p.source)
            var slot = UInt16.max
            if p.source != .switchItself {
                guard let r = records[p.source] else { continue }
                slot = r.slot
            }
            guard let i = p.bytes.withUnsafeBytes({ batch.append($0, vnetHeader: p.vnetHeader) }) else { continue }
            // As it was pended: headers (an extension may have rewritten it), destinations, contexts.
            batch.sourcePort[i] = p.source
            batch.sourceSlot[i] = slot
            batch.sourceNIC[i] = p.sourceNIC
            batch.entryLevel[i] = p.level + 1
            batch.headers[i] = p.headers
            var n = 0
            // A destination port deleted meanwhile (its slot maybe reused) is skipped.
            for d in p.destinations where n < batch.maxDestinations && slots[Int(d.slot)].port == d.port && slots[Int(d.slot)].inUse {
                batch.destinations[i * batch.maxDestinations + n] = d
                n += 1
            }
            batch.destinationCount[i] = UInt16(n)
            if n == 0 && !p.destinations.isEmpty {
                dropFrame(batch, i, direction: .ingress, reason: .destinationNotConnected, reporter: Self.delivery)
            }
            batch.contextMask[i] = p.contextMask
            for k in 0..<p.contexts.count { batch.contexts[i * FrameBatch.contextSlots + k] = p.contexts[k] }
        }
    }

    /// Clones frame `i` as it is (headers included, not re-admitted), entering at `level`.
    func cloneFrame(_ batch: FrameBatch, _ i: Int, level: Int16, keepingDestinations: Bool, reporter: Int) -> Int? {
        guard let c = batch.append(UnsafeRawBufferPointer(batch.bytes(i)), vnetHeader: batch.virtioHeader(i)) else {
            countDrop(port: batch.sourcePort[i], slot: batch.sourceSlot[i], direction: .ingress, reason: .batchFull, reporter: reporter)
            return nil
        }
        batch.sourcePort[c] = batch.sourcePort[i]
        batch.sourceSlot[c] = batch.sourceSlot[i]
        batch.sourceNIC[c] = batch.sourceNIC[i]
        batch.entryLevel[c] = level
        batch.headers[c] = batch.headers[i]
        if batch.dirty[i] { batch.markDirty(c) }
        if keepingDestinations {
            let n = Int(batch.destinationCount[i])
            (batch.destinations + c * batch.maxDestinations).update(from: batch.destinations + i * batch.maxDestinations, count: n)
            batch.destinationCount[c] = UInt16(n)
        }
        return c
    }

    /// Re-parses frame `i` after an extension changed its bytes (see the contract in
    /// ``SwitchExtension``): a frame that no longer parses is dropped and reported with the extension.
    func reparse(_ batch: FrameBatch, _ i: Int, reporter: Int) {
        batch.dirty[i] = false
        let old = batch.headers[i]
        if let bad = FrameParser.parse(batch.frame(i), length: batch.length(i), into: &batch.headers[i]) {
            dropFrame(batch, i, direction: .ingress, reason: bad.reason, reporter: reporter)
            return
        }
        let h = batch.headers[i]
        if h.isTagged { return }  // parse set the VLAN from the tag
        batch.headers[i].vlan = old.isTagged ? untaggedVLAN(of: batch.sourceSlot[i]) : old.vlan
    }

    /// The VLAN an untagged frame from `slot` belongs to (0 for the switch itself or no native VLAN).
    func untaggedVLAN(of slot: UInt16) -> VLANID {
        guard slot != UInt16.max else { return 0 }
        let info = slots[Int(slot)]
        switch info.vlanMode {
        case SlotInfo.access: return info.accessVLAN
        case SlotInfo.trunk: return info.nativeVLAN == SlotInfo.noVLAN ? 0 : info.nativeVLAN
        default: return 0
        }
    }

    /// Re-parses the frames extension `k` rewrote.
    @inline(__always)
    func reparseDirty(_ batch: FrameBatch, reporter: Int) {
        guard batch.anyDirty else { return }
        batch.anyDirty = false
        for i in 0..<batch.count where batch.dirty[i] {
            if batch.state[i] == .live { reparse(batch, i, reporter: reporter) } else { batch.dirty[i] = false }
        }
    }

    // MARK: - Admission

    /// Parses frame `i` and classifies it into a VLAN according to its source port's policy.
    /// Untagged and access ports take untagged (or priority-tagged, VID 0) frames only; a trunk
    /// takes its allowed VLANs tagged and untagged frames into its native VLAN. 802.1ad and stacked
    /// tags (the double-tagging VLAN hop) are refused on every port but the uplink, which may carry
    /// stacked 802.1Q tags from the wire.
    @inline(__always)
    func admit(_ batch: FrameBatch, _ i: Int) {
        if let bad = FrameParser.parse(batch.frame(i), length: batch.length(i), into: &batch.headers[i]) {
            dropFrame(batch, i, direction: .ingress, reason: bad.reason, reporter: Self.admission)
            return
        }
        let slot = batch.sourceSlot[i]
        guard slot != UInt16.max else { return }  // from the switch itself: VLAN as tagged
        let info = slots[Int(slot)]
        let h = batch.headers[i]
        if h.isTagged && (h.isServiceTagged || (h.isQinQ && !info.isUplink)) {
            dropFrame(batch, i, direction: .ingress, reason: .qinqNotAllowed, reporter: Self.admission)
            return
        }
        let vid = h.taggedVLAN
        switch info.vlanMode {
        case SlotInfo.trunk:
            if vid != 0 {
                guard trunkAllows(slot, vid) else {
                    dropFrame(batch, i, direction: .ingress, reason: .vlanNotAllowed, reporter: Self.admission)
                    return
                }
                batch.headers[i].vlan = vid
            } else {
                guard info.nativeVLAN != SlotInfo.noVLAN else {
                    dropFrame(batch, i, direction: .ingress, reason: .vlanNotAllowed, reporter: Self.admission)
                    return
                }
                batch.headers[i].vlan = info.nativeVLAN
            }
        default:
            if vid != 0 {
                dropFrame(batch, i, direction: .ingress, reason: .vlanNotAllowed, reporter: Self.admission)
                return
            }
            batch.headers[i].vlan = info.vlanMode == SlotInfo.access ? info.accessVLAN : 0
        }
    }

    @inline(__always)
    func trunkAllows(_ slot: UInt16, _ vid: VLANID) -> Bool {
        trunkBitmaps[Int(slot) * 64 + Int(vid >> 6)] & (1 << UInt64(vid & 63)) != 0
    }

    /// Whether a port takes frames of `vid` (built-in VLAN enforcement on egress).
    @inline(__always)
    func egressAllows(_ slot: UInt16, _ vid: VLANID) -> Bool {
        let info = slots[Int(slot)]
        switch info.vlanMode {
        case SlotInfo.access: return vid == info.accessVLAN
        case SlotInfo.trunk: return vid == info.nativeVLAN || (vid != 0 && trunkAllows(slot, vid))
        default: return vid == 0
        }
    }

    /// `inFlight`: a resumed frame that was admitted before; it completes its journey even if its
    /// source NIC disconnected meanwhile (the NIC reference it holds keeps the port alive).
    func inject(into batch: FrameBatch, bytes: UnsafeRawBufferPointer, vnetHeader: VirtioNetHeader?, source: PortID,
                level: Int16, reporter: Int, sourceNIC: NICIndex = 0, inFlight: Bool = false) -> Int? {
        var slot = UInt16.max
        if source != .switchItself {
            guard let r = records[source], inFlight || slots[Int(r.slot)].acceptsIngress else {
                diagnose(reporter, "injection with the identity of port \(source) refused: the port has no NIC accepting traffic")
                return nil
            }
            slot = r.slot
        }
        guard let i = batch.append(bytes, vnetHeader: vnetHeader) else {
            countDrop(port: source, slot: slot, direction: .ingress, reason: .batchFull, reporter: reporter)
            return nil
        }
        batch.sourcePort[i] = source
        batch.sourceSlot[i] = slot
        batch.sourceNIC[i] = sourceNIC
        batch.entryLevel[i] = level
        batch.destinationCount[i] = 0
        if source == .switchItself { injectedFrames &+= 1 }
        admit(batch, i)
        return batch.state[i] == .live ? i : nil
    }

    // MARK: - The stack

    func run(_ batch: FrameBatch, _ sink: any FrameSink) {
        inBatch = true
        batches &+= 1
        defer {
            inBatch = false
            // Deletes whose last reference an extension released during the batch happen now.
            settleDeferred()
        }
        let current = stack
        for (k, ext) in current.enumerated() {
            var ctx = IngressContext(batch: batch, sw: self, level: Int16(k), stackIndex: k,
                                     extensionClass: ext.extensionClass, frames: 0..<batch.count)
            ext.ingress(&ctx)
            reparseDirty(batch, reporter: k)
        }
        if forwardingIndex == nil { forward(batch) }
        for i in 0..<batch.count where batch.state[i] == .live && batch.destinationCount[i] == 0 {
            dropFrame(batch, i, direction: .ingress, reason: .noDestination, reporter: Self.forwarding)
        }
        for k in current.indices.reversed() {
            var ctx = EgressContext(batch: batch, sw: self, stackIndex: k, extensionClass: current[k].extensionClass,
                                    frames: 0..<batch.count)
            current[k].egress(&ctx)
        }
        deliver(batch, sink)
    }

    // MARK: - Built-in forwarding: a learning L2 switch

    func forward(_ batch: FrameBatch) {
        let now = self.now
        // Frames with destinations already (clones that kept theirs, resumed frames) are not re-forwarded.
        for i in 0..<batch.count where batch.state[i] == .live && batch.destinationCount[i] == 0 {
            let h = batch.headers[i]
            let srcSlot = batch.sourceSlot[i]
            if srcSlot != UInt16.max {
                macTable.learn(h.source, vlan: h.vlan, port: batch.sourcePort[i], slot: srcSlot, now: now)
            }
            if h.destination.isMulticast {
                flood(batch, i, vlan: h.vlan, except: srcSlot, uplinksOnly: false)
                if batch.destinationCount[i] == 0 { floodFoundNoPort(batch, i) }
                continue
            }
            if let hit = macTable.lookup(h.destination, vlan: h.vlan, now: now) {
                if hit.slot == srcSlot {
                    dropFrame(batch, i, direction: .ingress, reason: .destinationIsSource, reporter: Self.forwarding)
                    continue
                }
                if slots[Int(hit.slot)].connected && egressAllows(hit.slot, h.vlan) {
                    appendDestination(batch, i, slot: hit.slot)
                    continue
                }
            }
            if unknownUnicast == .uplink {
                if srcSlot != UInt16.max && slots[Int(srcSlot)].isUplink {
                    dropFrame(batch, i, direction: .ingress, reason: .unknownUnicastNoUplink, reporter: Self.forwarding)
                    continue
                }
                flood(batch, i, vlan: h.vlan, except: srcSlot, uplinksOnly: true)
                if batch.destinationCount[i] == 0 {
                    dropFrame(batch, i, direction: .ingress, reason: .unknownUnicastNoUplink, reporter: Self.forwarding)
                }
            } else {
                flood(batch, i, vlan: h.vlan, except: srcSlot, uplinksOnly: false)
                if batch.destinationCount[i] == 0 { floodFoundNoPort(batch, i) }
            }
        }
    }

    /// A flood with no other port in its VLAN: done, not dropped (nothing was lost).
    @inline(__always)
    func floodFoundNoPort(_ batch: FrameBatch, _ i: Int) {
        batch.state[i] = .dropped
        floodsWithoutPort &+= 1
    }

    @inline(__always)
    func flood(_ batch: FrameBatch, _ i: Int, vlan: VLANID, except source: UInt16, uplinksOnly: Bool) {
        for k in 0..<connectedCount {
            let s = connectedSlots[k]
            if s == source || (uplinksOnly && !slots[Int(s)].isUplink) || !egressAllows(s, vlan) { continue }
            appendDestination(batch, i, slot: s)
        }
    }

    @inline(__always)
    func appendDestination(_ batch: FrameBatch, _ i: Int, slot: UInt16) {
        let n = Int(batch.destinationCount[i])
        guard n < batch.maxDestinations else { return }
        batch.destinations[i * batch.maxDestinations + n] = Destination(port: slots[Int(slot)].port, nic: 0, slot: slot, isExcluded: false)
        batch.destinationCount[i] = UInt16(n + 1)
    }

    /// A forwarding extension's destination: only connected NICs in the frame's VLAN, no
    /// duplicates. A destination outside the frame's VLAN is refused and counted at that port.
    func addDestination(_ batch: FrameBatch, _ i: Int, port: PortID, nic: NICIndex, reporter: Int) -> Bool {
        guard nic == 0, let r = records[port], slots[Int(r.slot)].connected else { return false }
        guard egressAllows(r.slot, batch.headers[i].vlan) else {
            countDrop(port: port, slot: r.slot, direction: .egress, reason: .vlanNotAllowed, reporter: reporter)
            return false
        }
        for d in batch.destinations(i) where d.port == port { return true }
        appendDestination(batch, i, slot: r.slot)
        return true
    }

    // MARK: - Delivery

    func deliver(_ batch: FrameBatch, _ sink: any FrameSink) {
        let cap = configuration.batchCapacity
        var touchedCount = 0
        for i in 0..<batch.count where batch.state[i] == .live {
            let n = Int(batch.destinationCount[i])
            var delivered = false
            for d in 0..<n {
                let dest = batch.destinations[i * batch.maxDestinations + d]
                if dest.isExcluded { continue }
                let s = Int(dest.slot)
                guard slots[s].connected else {
                    countDrop(port: dest.port, slot: dest.slot, direction: .egress, reason: .destinationNotConnected, reporter: Self.delivery)
                    if !captureTaps.isEmpty {
                        tapDrop(batch, i, port: dest.port, slot: dest.slot, direction: .egress, reason: .destinationNotConnected, reporter: Self.delivery)
                    }
                    continue
                }
                if txCounts[s] == 0 {
                    touched[touchedCount] = dest.slot
                    touchedCount += 1
                }
                txLists[s * cap + txCounts[s]] = UInt16(i)
                txCounts[s] += 1
                delivered = true
                if n == 1 && offload.datapath != nil { considerOffload(batch, i, to: dest.slot) }
            }
            if !delivered && n > 0 {
                dropFrame(batch, i, direction: .ingress, reason: .allDestinationsExcluded, reporter: Self.delivery)
            }
        }
        for t in 0..<touchedCount {
            let slot = touched[t]
            let s = Int(slot)
            let list = txLists + s * cap
            let count = txCounts[s]
            txCounts[s] = 0
            for j in 0..<count { conform(batch, Int(list[j]), to: slot) }
            // One frame the device refuses on its own (``TransmitResult/refusedOne``) costs only that
            // frame: the ones after it are handed over again.
            var start = 0
            while start < count {
                let result = sink.transmit(batch, to: slots[s].port, frames: UnsafeBufferPointer(start: list + start, count: count - start))
                let sent = min(max(result.sent, 0), count - start)
                var bytes: UInt64 = 0
                for j in start..<start + sent { bytes &+= UInt64(batch.length[Int(list[j])]) }
                slots[s].framesOut &+= UInt64(sent)
                slots[s].bytesOut &+= bytes
                let dropEnd = result.refusedOne && start + sent < count ? start + sent + 1 : count
                if !result.refusedOne && start + sent < count { markQueueFull(slot) }
                for j in start + sent..<dropEnd {
                    countDrop(port: slots[s].port, slot: slot, direction: .egress, reason: result.failure, reporter: Self.delivery)
                    if !captureTaps.isEmpty {
                        tapDrop(batch, Int(list[j]), port: slots[s].port, slot: slot, direction: .egress, reason: result.failure, reporter: Self.delivery)
                    }
                }
                if !captureTaps.isEmpty && sent > 0 {
                    let ctx = DeliveryContext(batch: batch, sw: self, port: slots[s].port, portIndex: s,
                                              frames: UnsafeBufferPointer(start: list + start, count: sent))
                    for tap in captureTaps { tap.delivered(ctx) }
                }
                start = dropEnd
            }
        }
        if !captureTaps.isEmpty {
            let ctx = CopyContext(sw: self, sink: sink)
            for tap in captureTaps { tap.batchDelivered(ctx) }
        }
        for k in 0..<txFullCount { txFull[Int(txFullSlots[k])] = false }
        txFullCount = 0
    }

    /// Marks `slot`'s queue full for the rest of this batch: copies do not go there.
    @inline(__always)
    func markQueueFull(_ slot: UInt16) {
        guard !txFull[Int(slot)] else { return }
        txFull[Int(slot)] = true
        txFullSlots[txFullCount] = slot
        txFullCount += 1
    }

    /// A capture extension's copies to `port` (see ``CopyContext``): only into the room its normal
    /// frames left, never counted at the port.
    func transmitCopies(_ copies: FrameBatch, frames: UnsafeBufferPointer<UInt16>, to port: PortID, sink: any FrameSink) -> Int {
        guard let r = records[port], slots[Int(r.slot)].connected, !txFull[Int(r.slot)] else { return 0 }
        var start = 0, taken = 0
        while start < frames.count {
            let result = sink.transmit(copies, to: port, frames: UnsafeBufferPointer(rebasing: frames[start...]))
            let sent = min(max(result.sent, 0), frames.count - start)
            taken += sent
            guard result.refusedOne && start + sent < frames.count else {
                if start + sent < frames.count { markQueueFull(r.slot) }
                break
            }
            start += sent + 1  // only that copy was too large for the port: the next ones may go
        }
        return taken
    }

    /// Puts frame `i` in the VLAN form destination `slot` takes: untagged on access ports and for a
    /// trunk's native VLAN, tagged otherwise. Edits in place (headroom); the payload is not copied.
    @inline(__always)
    func conform(_ batch: FrameBatch, _ i: Int, to slot: UInt16) {
        let info = slots[Int(slot)]
        let h = batch.headers[i]
        let vid = h.vlan
        let wantTag = info.vlanMode == SlotInfo.trunk && vid != info.nativeVLAN && vid != 0
        if wantTag {
            if !h.isTagged {
                batch.insertVLANTag(i, tci: vid)
                batch.headers[i].isTagged = true
                batch.headers[i].vlanTCI = vid
            } else if h.vlanTCI & 0x0FFF != vid {
                let tci = (h.vlanTCI & 0xF000) | vid
                batch.frame(i).storeBytes(of: tci.bigEndian, toByteOffset: 14, as: UInt16.self)
                batch.headers[i].vlanTCI = tci
            }
        } else if h.isTagged {
            batch.removeVLANTag(i)
            batch.headers[i].isTagged = false
        }
    }

    // MARK: - Drop accounting

    func dropFrame(_ batch: FrameBatch, _ i: Int, direction: Direction, reason: DropReason, reporter: Int) {
        batch.state[i] = .dropped
        countDrop(port: batch.sourcePort[i], slot: batch.sourceSlot[i], direction: direction, reason: reason, reporter: reporter)
        if !captureTaps.isEmpty {
            tapDrop(batch, i, port: batch.sourcePort[i], slot: batch.sourceSlot[i], direction: direction, reason: reason, reporter: reporter)
        }
    }

    func countExclusion(_ batch: FrameBatch, _ i: Int, destination: Destination, reason: DropReason, reporter: Int) {
        countDrop(port: destination.port, slot: destination.slot, direction: .egress, reason: reason, reporter: reporter)
        if !captureTaps.isEmpty {
            tapDrop(batch, i, port: destination.port, slot: destination.slot, direction: .egress, reason: reason, reporter: reporter)
        }
    }

    /// Shows a drop to the capture extensions (only called when one is enabled).
    func tapDrop(_ batch: FrameBatch, _ i: Int, port: PortID, slot: UInt16, direction: Direction, reason: DropReason, reporter: Int) {
        let ctx = DropContext(batch: batch, sw: self, frame: i, port: port, portIndex: slot == UInt16.max ? -1 : Int(slot),
                              direction: direction, reason: reason, reporterIndex: reporter)
        for tap in captureTaps { tap.dropped(ctx) }
    }

    func countDrop(port: PortID, slot: UInt16, direction: Direction, reason: DropReason, reporter: Int) {
        let reporterID = reporter >= 0 ? (reporter < stackReporters.count ? stackReporters[reporter] : 0) : UInt16(-reporter - 1)
        let index = dropKind(reason: reason.code, reporter: reporterID) * 2 + Int(direction.rawValue)
        if port == .switchItself || slot == UInt16.max {
            if index >= switchDrops.count { switchDrops.append(contentsOf: repeatElement(0, count: index + 1 - switchDrops.count)) }
            switchDrops[index] &+= 1
        } else if let r = slotRecords[Int(slot)] {
            // Grows only on a kind's first drop at this port.
            if index >= r.drops.count { r.drops.append(contentsOf: repeatElement(0, count: dropKinds.count * 2 - r.drops.count)) }
            r.drops[index] &+= 1
        }
        if let onDrop {
            onDrop(DropReport(port: port, direction: direction, reason: reasonNames[Int(reason.code)], reporter: reporterNames[Int(reporterID)]))
        }
    }

    /// The drop kind of (reason, reporter); a new pair is added on its first occurrence (an append
    /// into reserved capacity).
    @inline(__always)
    func dropKind(reason: UInt16, reporter: UInt16) -> Int {
        let slot = Int(reporter) * kindStride + Int(reason)
        if Int(reason) < kindStride && slot < kindIndex.count && kindIndex[slot] >= 0 { return Int(kindIndex[slot]) }
        return addDropKind(reason: reason, reporter: reporter)
    }

    func addDropKind(reason: UInt16, reporter: UInt16) -> Int {
        if Int(reason) >= kindStride || (Int(reporter) + 1) * kindStride > kindIndex.count {
            rebuildKindIndex(stride: max(kindStride, Int(reason) + 1), reporters: max(reporterNames.count, Int(reporter) + 1) + 8)
        }
        let slot = Int(reporter) * kindStride + Int(reason)
        if kindIndex[slot] < 0 {
            kindIndex[slot] = Int32(dropKinds.count)
            dropKinds.append((reason, reporter))
        }
        return Int(kindIndex[slot])
    }

    func rebuildKindIndex(stride: Int, reporters: Int) {
        kindStride = stride
        kindIndex = Array(repeating: -1, count: stride * reporters)
        for (k, kind) in dropKinds.enumerated() { kindIndex[Int(kind.reporter) * stride + Int(kind.reason)] = Int32(k) }
    }

    /// Core stages as drop reporters (negative `reporter` values; 0 and up are stack positions).
    static let admission = -1, forwarding = -2, delivery = -3
}
