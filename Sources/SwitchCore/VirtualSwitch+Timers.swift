// Extension timers and NIC save/restore: the parts of the extension contract that run between
// batches (see ``SwitchExtension``).

extension VirtualSwitch {
    // MARK: - Timers

    /// Schedules a timer for `ext` (an enabled extension) `delay` nanoseconds from now on
    /// ``clock``; with `interval` > 0 it then fires every `interval` ns (a tick; no catching up
    /// after a stall). ``SwitchExtension/timerFired(_:switch:)`` runs when it is due, between
    /// batches, even when no traffic flows. Returns nil when `ext` is not enabled.
    @discardableResult
    public func scheduleTimer(for ext: any SwitchExtension, after delay: UInt64, every interval: UInt64 = 0,
                              tag: Int = 0) -> ExtensionTimer? {
        scheduleTimer(for: ext, at: clock() &+ delay, every: interval, tag: tag)
    }

    /// Schedules a timer for `ext` at the absolute `deadline` on ``clock``.
    @discardableResult
    public func scheduleTimer(for ext: any SwitchExtension, at deadline: UInt64, every interval: UInt64 = 0,
                              tag: Int = 0) -> ExtensionTimer? {
        let owner = ObjectIdentifier(ext)
        guard stack.contains(where: { ObjectIdentifier($0) == owner }) else {
            onDiagnostic?("\(ext.name): timer refused: the extension is not enabled")
            return nil
        }
        let id = nextTimerID
        nextTimerID &+= 1
        timers.append(TimerEntry(id: id, owner: owner, deadline: deadline, interval: interval, tag: tag))
        return ExtensionTimer(id: id, tag: tag)
    }

    /// Cancels a timer (idempotent; a fired one-shot timer is already gone).
    public func cancelTimer(_ timer: ExtensionTimer) {
        timers.removeAll { $0.id == timer.id }
    }

    /// The earliest timer deadline on ``clock``, or nil when no timer is scheduled. The packet loop
    /// sleeps no longer than this.
    public var nextTimerDeadline: UInt64? {
        var next: UInt64? = nil
        for t in timers where next == nil || t.deadline < next! { next = t.deadline }
        return next
    }

    /// Fires the timers due at ``clock``, earliest first (each at most once per call), then runs
    /// the frames extensions resumed into `batch` and delivers them to `sink`. Returns the number of
    /// frames processed. Call it between batches, when ``nextTimerDeadline`` has passed.
    @discardableResult
    public func runTimers(_ batch: FrameBatch, to sink: any FrameSink) -> Int {
        if !firingTimers && !inBatch && !controlBusy {
            firingTimers = true
            let now = clock()
            // Extensions that read the per-batch clock in their callbacks see the time of this run.
            if now > clockNanoseconds { clockNanoseconds = now }
            var budget = timers.count
            while budget > 0, let k = earliestDue(now) {
                budget -= 1
                let t = timers[k]
                if t.interval > 0 {
                    let next = t.deadline &+ t.interval
                    timers[k].deadline = next > now ? next : now &+ t.interval
                } else {
                    timers.remove(at: k)
                }
                guard let ext = stack.first(where: { ObjectIdentifier($0) == t.owner }) else { continue }
                ext.timerFired(ExtensionTimer(id: t.id, tag: t.tag), switch: self)
            }
            firingTimers = false
            settleDeferred()
        }
        var processed = 0
        while hasPendingFrames {
            let n = processPending(batch, to: sink)
            processed += n
            if n == 0 { break }
        }
        return processed
    }

    func earliestDue(_ now: UInt64) -> Int? {
        var best: Int? = nil
        for k in timers.indices where timers[k].deadline <= now {
            if best == nil || timers[k].deadline < timers[best!].deadline { best = k }
        }
        return best
    }

    // MARK: - NIC save/restore

    /// NIC save: asks every enabled extension, top of the stack first, for its state for the NIC on
    /// `port` (Hyper-V's OID_SWITCH_NIC_SAVE). Each blob is stamped with its extension's name.
    /// Empty when the port has no NIC or no extension has anything to save.
    public func saveNICState(of port: PortID) -> [SavedNICState] {
        guard let r = records[port], let nic = r.nic, !controlBusy, !inBatch else { return [] }
        controlBusy = true
        defer {
            controlBusy = false
            settleDeferred()
        }
        var out: [SavedNICState] = []
        for ext in stack {
            callbackExtension = ext.name
            if var state = ext.saveNIC(port: r.params, nic: nic, switch: self) {
                state.extensionName = ext.name
                out.append(state)
            }
        }
        callbackExtension = nil
        return out
    }

    /// NIC restore: hands each saved blob to the enabled extension of its name (Hyper-V's
    /// OID_SWITCH_NIC_RESTORE; the port id may differ from the one at save time). Returns the
    /// blobs nobody took (no such extension enabled, or it refused them); each is also reported
    /// through ``onDiagnostic``.
    @discardableResult
    public func restoreNICState(_ states: [SavedNICState], on port: PortID) throws(SwitchError) -> [SavedNICState] {
        try checkNotBusy("NIC restore")
        let r = try record(port, for: "NIC restore")
        guard let nic = r.nic else {
            throw SwitchError(.invalidState, "NIC restore refused for port \(describe(r)): it has no NIC")
        }
        controlBusy = true
        defer {
            controlBusy = false
            settleDeferred()
        }
        var refused: [SavedNICState] = []
        for state in states {
            guard let ext = stack.first(where: { $0.name == state.extensionName }) else {
                onDiagnostic?("saved NIC state of extension \(state.extensionName) for port \(describe(r)) dropped: the extension is not enabled")
                refused.append(state)
                continue
            }
            callbackExtension = ext.name
            if !ext.restoreNIC(state, port: r.params, nic: nic, switch: self) {
                onDiagnostic?("\(ext.name): refused its saved NIC state (version \(state.version), \(state.data.count) bytes) for port \(describe(r))")
                refused.append(state)
            }
        }
        callbackExtension = nil
        return refused
    }
}
