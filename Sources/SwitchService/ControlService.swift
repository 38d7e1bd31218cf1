import ControlProtocol
import DaemonConfig
import Foundation
import LinuxNet
import Logging
import ServiceSupport
import StateStore

/// Owns the control-plane state: runs requests against the backend one mutation at a time and
/// records the resulting VMs and ports in the state store after every change.
///
/// ## Concurrency model
/// An actor. Mutations (VM and port operations, config application) run through ``serially(_:)``,
/// a FIFO gate that holds across the backend's suspension points, so two requests never interleave
/// their lifecycle steps or their state writes. Queries go straight to the backend.
public actor ControlService {
    public nonisolated let backend: any SwitchBackend
    private let store: StateStore
    private var records: StateRecords
    private let logger: Logger
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// The `[extensions.NAME]` settings given to the backend (at start by the daemon, then by reloads).
    public var appliedExtensionSettings: [String: [String: String]] = [:]

    public func noteExtensionSettings(_ settings: [String: [String: String]]) { appliedExtensionSettings = settings }

    public init(backend: any SwitchBackend, store: StateStore, records: StateRecords, logger: Logger) {
        self.backend = backend
        self.store = store
        self.records = records
        self.logger = logger
    }

    /// The VMs and ports currently recorded.
    public var recorded: StateRecords { records }

    private func serially<T: Sendable>(_ body: () async -> T) async -> T {
        if busy {
            await withCheckedContinuation { waiters.append($0) }
        }
        busy = true
        defer {
            if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
        }
        return await body()
    }

    public func subscribeEvents() async -> EventSubscription { await backend.subscribeEvents() }

    /// Keeps the records true when the switch removes a port by itself (a TAP deleted outside
    /// tapswitch): the NIC leaves its VM's record, the VM goes with its last NIC, and the state
    /// file is rewritten, so a restart does not recreate it and `vm start` works again. Call once
    /// at start-up.
    public func watchLostPorts() async {
        await backend.setPortLostHandler { [weak self] lost in
            guard let self else { return }
            Task(executorPreference: DaemonExecutor.shared) { await self.forget(lost) }
        }
    }

    private func forget(_ lost: LostPort) async {
        await serially {
            if let vm = lost.vm, let i = records.vms.firstIndex(where: { $0.name == vm }) {
                records.vms[i].nics.removeAll { $0.tap == lost.name }
                if records.vms[i].nics.isEmpty { records.vms.remove(at: i) }
            } else {
                records.internalPorts.removeAll { $0.name == lost.name }
                records.externalPorts.removeAll { $0.device == lost.name }
                records.segments.removeAll { $0.portName == lost.name }
            }
            do throws(SwitchError) { try store.save(records) } catch {
                logger.error("cannot record state after a lost port", metadata: ["port": "\(lost.name)", "error": "\(error.message)"])
            }
        }
    }

    /// Answers one request. Never throws: failures become `{"ok": false, "error": ...}`.
    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch request {
        case .ping, .version:
            return ControlResponse(version: VersionInfo(daemon: TapswitchVersion.current, protocolVersion: Wire.protocolVersion,
                                                        backend: backend.kind, pid: getpid()))
        case .show:
            return ControlResponse(snapshot: await backend.snapshot())
        case .fdb:
            return ControlResponse(fdb: await backend.fdb())
        case .extensions:
            return ControlResponse(extensions: await backend.extensions())
        case .capture:
            return .failure(SwitchError(.invalidArgument, "capture streams are served by the control socket, not as a request"))
        case .events(_, let after):
            let sub = await backend.subscribeEvents()
            sub.cancel()
            return ControlResponse(events: after.map { a in sub.history.filter { $0.seq > a } } ?? sub.history)
        case .vmStart(let spec):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(ports: try await startVM(spec)) } }
        case .vmStop(let name, let force):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(pending: try await stopVM(name, force: force)) } }
        case .portAddInternal(let spec):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(ports: [try await addInternal(spec)]) } }
        case .portAddExternal(let spec):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(ports: [try await addExternal(spec)]) } }
        case .segmentAdd(let spec):
            return await serially { await result { () async throws(SwitchError) in
                ControlResponse(ports: [try await addSegment(spec)], segments: [spec])
            } }
        case .segmentDel(let name):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(pending: try await removeSegment(name)) } }
        case .segmentList:
            return ControlResponse(segments: await backend.segments())
        case .mirrorAdd(let spec):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(mirrors: [try await addMirror(spec)]) } }
        case .mirrorDel(let name):
            return await serially { await result { () async throws(SwitchError) in
                try await removeMirror(name)
                return ControlResponse(mirrors: await backend.mirrors())
            } }
        case .mirrorList:
            return ControlResponse(mirrors: await backend.mirrors())
        case .portRemove(let name):
            return await serially { await result { () async throws(SwitchError) in ControlResponse(pending: try await removePort(name)) } }
        case .portSet(let name, let words):
            return await serially {
                await result { () async throws(SwitchError) in
                    ControlResponse(ports: [try await changeSettings(name) { (s: inout PortSettings) throws(SwitchError) in try s.apply(words) }])
                }
            }
        case .portReset(let name, let keys):
            return await serially {
                await result { () async throws(SwitchError) in
                    ControlResponse(ports: [try await changeSettings(name) { (s: inout PortSettings) throws(SwitchError) in try s.reset(keys) }])
                }
            }
        case .aclAdd(let name, let text):
            return await serially {
                await result { () async throws(SwitchError) in
                    let rule: ACLRule
                    do throws(SwitchError) { rule = try ACLRule(text) } catch { throw error.context("invalid ACL rule") }
                    _ = try await changeSettings(name) { (s: inout PortSettings) throws(SwitchError) in try s.acl.add(rule) }
                    return ControlResponse(acl: try await backend.aclInfo(named: name))
                }
            }
        case .aclDelete(let name, let id):
            return await serially {
                await result { () async throws(SwitchError) in
                    _ = try await changeSettings(name) { (s: inout PortSettings) throws(SwitchError) in try s.acl.remove(id: id) }
                    return ControlResponse(acl: try await backend.aclInfo(named: name))
                }
            }
        case .aclList(let name):
            return await result { () async throws(SwitchError) in ControlResponse(acl: try await backend.aclInfo(named: name)) }
        case .nicSave(let name):
            return await result { () async throws(SwitchError) in
                let states = try await backend.saveNICState(named: name)
                logger.info("NIC state saved", metadata: ["port": "\(name)", "extensions": "\(states.map(\.extensionName).joined(separator: ","))"])
                return ControlResponse(nicStates: states)
            }
        case .nicRestore(let name, let states):
            return await serially {
                await result { () async throws(SwitchError) in
                    let refused = try await backend.restoreNICState(states, named: name)
                    logger.notice("NIC state restored", metadata: [
                        "port": "\(name)", "extensions": "\(states.map(\.extensionName).joined(separator: ","))",
                        "refused": "\(refused.map(\.extensionName).joined(separator: ","))",
                    ])
                    return ControlResponse(nicStates: refused)
                }
            }
        case .extensionEnable(let name, let position):
            return await serially {
                await result { () async throws(SwitchError) in
                    try await backend.enableExtension(named: name, position: position)
                    logger.notice("extension enabled", metadata: ["extension": "\(name)"])
                    return ControlResponse(extensions: await backend.extensions())
                }
            }
        case .extensionDisable(let name):
            return await serially {
                await result { () async throws(SwitchError) in
                    try await backend.disableExtension(named: name)
                    logger.notice("extension disabled", metadata: ["extension": "\(name)"])
                    return ControlResponse(extensions: await backend.extensions())
                }
            }
        case .extensionSet(let name, let words):
            return await serially {
                await result { () async throws(SwitchError) in
                    let settings: [String: String]
                    do throws(FieldError) { settings = try Validate.extensionSettings(words, field: "settings") } catch {
                        throw SwitchError(.invalidArgument, error.description)
                    }
                    try await backend.setExtensionSettings(named: name, settings)
                    logger.notice("extension settings changed", metadata: ["extension": "\(name)", "settings": "\(words.joined(separator: " "))"])
                    return ControlResponse(extensions: await backend.extensions())
                }
            }
        case .portGet(let name):
            return await result { () async throws(SwitchError) in ControlResponse(ports: [try await port(named: name)]) }
        }
    }

    private func result(_ body: () async throws(SwitchError) -> ControlResponse) async -> ControlResponse {
        do {
            return try await body()
        } catch {
            return .failure(error)
        }
    }

    // MARK: - Mutations (called inside `serially`)

    private func startVM(_ spec: VMSpec) async throws(SwitchError) -> [PortInfo] {
        if records.vm(named: spec.name) != nil { throw SwitchError(.exists, "VM '\(spec.name)' is already running") }
        // Write-ahead: a crash from here until the intent is cleared is undone by the next start
        // (the TAPs made so far are deleted) unless the VM was recorded, which completes it.
        do throws(SwitchError) { try store.recordIntent(Intent(.vmStart, vm: spec.name, taps: spec.nics.map(\.tap))) } catch {
            throw error.context("VM '\(spec.name)' was not started: cannot record state")
        }
        CrashPoint.reach("vm-start:intent")
        defer { clearIntent() }
        let ports = try await backend.startVM(spec)
        var recorded = spec
        // Record the MACs actually assigned, so a restart re-adopts the same addresses.
        for (i, port) in ports.enumerated() where i < recorded.nics.count {
            recorded.nics[i].mac = port.nic?.assignedMAC ?? recorded.nics[i].mac
        }
        records.vms.append(recorded)
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            records.vms.removeAll { $0.name == spec.name }
            _ = try? await backend.stopVM(named: spec.name, force: true)
            throw error.context("VM '\(spec.name)' was not started: cannot record state")
        }
        CrashPoint.reach("vm-start:recorded")
        logger.notice("VM started", metadata: ["vm": "\(spec.name)", "nics": "\(spec.nics.map(\.tap).joined(separator: ","))"])
        return ports
    }

    /// Answers once NIC_DISCONNECT is done for every NIC; returns the TAPs whose removal is pending.
    private func stopVM(_ name: String, force: Bool) async throws(SwitchError) -> [String]? {
        var after = records
        after.vms.removeAll { $0.name == name }
        let taps = records.vm(named: name)?.nics.map(\.tap) ?? []
        if !taps.isEmpty {
            // Write-ahead: a crash after the new records are written completes the stop at the next
            // start (the VM's TAPs are deleted); before that, nothing was touched and the VM stays.
            do throws(SwitchError) { try store.recordIntent(Intent(.vmStop, vm: name, taps: taps)) } catch {
                throw error.context("VM '\(name)' was not stopped: cannot record state")
            }
            CrashPoint.reach("vm-stop:intent")
        }
        defer { if !taps.isEmpty { clearIntent() } }
        let pending = try await recordingFirst(after, "VM '\(name)' was not stopped") { () async throws(SwitchError) in
            CrashPoint.reach("vm-stop:recorded")
            return try await backend.stopVM(named: name, force: force)
        }
        CrashPoint.reach("vm-stop:done")
        logger.notice("VM stopped", metadata: ["vm": "\(name)", "pending": "\(pending.joined(separator: ","))"])
        return pending.isEmpty ? nil : pending
    }

    /// The step is complete (or rolled back) and recorded: its intent goes. Failing that, the next
    /// start finds a stale intent, which it resolves against the records and the kernel anyway.
    private func clearIntent() {
        do throws(SwitchError) { try store.clearIntent() } catch {
            logger.error("cannot remove the intent record", metadata: ["error": "\(error.message)"])
        }
    }

    private func addInternal(_ spec: InternalPortSpec) async throws(SwitchError) -> PortInfo {
        let port = try await backend.addInternalPort(spec)
        var recorded = spec
        recorded.mac = port.mac ?? spec.mac
        records.internalPorts.append(recorded)
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            records.internalPorts.removeAll { $0.name == spec.name }
            _ = try? await backend.removePort(named: spec.name)
            throw error.context("port '\(spec.name)' was not added: cannot record state")
        }
        logger.notice("internal port added", metadata: ["port": "\(spec.name)"])
        return port
    }

    private func addExternal(_ spec: ExternalPortSpec) async throws(SwitchError) -> PortInfo {
        let port = try await backend.addExternalPort(spec)
        records.externalPorts.append(spec)
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            records.externalPorts.removeAll { $0.device == spec.device }
            _ = try? await backend.removePort(named: spec.device)
            throw error.context("port '\(spec.device)' was not added: cannot record state")
        }
        logger.notice("external port added", metadata: ["port": "\(spec.device)"])
        return port
    }

    private func addSegment(_ spec: SegmentSpec) async throws(SwitchError) -> PortInfo {
        for n in Set([spec.name, spec.portName]) where records.portNames.contains(n) {
            throw SwitchError(.exists, "'\(n)' is already a port of this switch")
        }
        let port = try await backend.addSegment(spec)
        records.segments.append(spec)
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            records.segments.removeAll { $0.name == spec.name }
            _ = try? await backend.removeSegment(named: spec.name)
            throw error.context("segment '\(spec.name)' was not added: cannot record state")
        }
        logger.notice("segment added", metadata: ["segment": "\(spec.name)", "vlan": "\(spec.vlan)", "vni": "\(spec.vni)",
                                                  "underlay": "\(spec.underlay)", "flood": "\(spec.flood.joined(separator: ","))"])
        return port
    }

    private func removeSegment(_ name: String) async throws(SwitchError) -> [String]? {
        var after = records
        after.segments.removeAll { $0.name == name }
        let pending = try await recordingFirst(after, "segment '\(name)' was not removed") { () async throws(SwitchError) in
            try await backend.removeSegment(named: name)
        }
        logger.notice("segment removed", metadata: ["segment": "\(name)", "pending": "\(pending)"])
        return pending ? [name] : nil
    }

    private func addMirror(_ spec: MirrorSpec) async throws(SwitchError) -> MirrorInfo {
        let info = try await backend.addMirror(spec)
        records.mirrors.append(spec)
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            records.mirrors.removeAll { $0.name == spec.name }
            _ = try? await backend.removeMirror(named: spec.name)
            throw error.context("mirror '\(spec.name)' was not added: cannot record state")
        }
        logger.notice("mirror added", metadata: ["mirror": "\(spec.name)", "source": "\(spec.source.joined(separator: ","))",
                                                 "direction": "\(spec.direction.rawValue)", "vlan": "\(spec.vlan.map(String.init) ?? "all")",
                                                 "to": "\(spec.to)"])
        return info
    }

    private func removeMirror(_ name: String) async throws(SwitchError) {
        var after = records
        after.mirrors.removeAll { $0.name == name }
        try await recordingFirst(after, "mirror '\(name)' was not deleted") { () async throws(SwitchError) in
            try await backend.removeMirror(named: name)
        }
        logger.notice("mirror deleted", metadata: ["mirror": "\(name)"])
    }

    private func removePort(_ name: String) async throws(SwitchError) -> [String]? {
        var after = records
        after.internalPorts.removeAll { $0.name == name }
        after.externalPorts.removeAll { $0.device == name }
        let pending = try await recordingFirst(after, "port '\(name)' was not removed") { () async throws(SwitchError) in
            try await backend.removePort(named: name)
        }
        logger.notice("port removed", metadata: ["port": "\(name)", "pending": "\(pending)"])
        return pending ? [name] : nil
    }

    private func port(named name: String) async throws(SwitchError) -> PortInfo {
        guard let p = await backend.snapshot().ports.first(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "no port named '\(name)'")
        }
        return p
    }

    /// Applies a change to a port's settings (one vetoable request), then records the new settings
    /// with the port's VM or port record so they survive a restart.
    private func changeSettings(_ name: String, _ change: (inout PortSettings) throws(SwitchError) -> Void) async throws(SwitchError) -> PortInfo {
        if let segment = records.segments.first(where: { $0.portName == name }) {
            throw SwitchError(.invalidState, "port '\(name)' is segment \(segment.name)'s: it carries the segment's VLAN untagged; "
                + "to change it, 'segment del' and 'segment add' again")
        }
        let current = try await port(named: name)
        var settings = try PortSettings.parse(current.settings ?? [])
        try change(&settings)
        let port = try await backend.setPortSettings(named: name, settings)
        for v in records.vms.indices {
            for n in records.vms[v].nics.indices where records.vms[v].nics[n].tap == name { records.vms[v].nics[n].record(settings) }
        }
        for i in records.internalPorts.indices where records.internalPorts[i].name == name { records.internalPorts[i].settings = settings.assignments }
        for i in records.externalPorts.indices where records.externalPorts[i].device == name { records.externalPorts[i].settings = settings.assignments }
        do throws(SwitchError) {
            try store.save(records)
        } catch {
            logger.error("cannot record state", metadata: ["error": "\(error.message)"])
            throw error.context("port '\(name)' settings applied, but the state could not be recorded")
        }
        logger.notice("port settings changed", metadata: ["port": "\(name)", "settings": "\(settings.assignments.joined(separator: " "))"])
        return port
    }

    /// Removal with the state recorded first: the records without the VM or port are written
    /// before any device is touched, so a full disk or a read-only state directory refuses the
    /// request with nothing changed, instead of deleting TAPs that the state file still lists (which
    /// a restart would recreate). If the removal itself fails, the previous records are written back.
    private func recordingFirst<T>(_ after: StateRecords, _ refusal: String,
                                   remove: () async throws(SwitchError) -> T) async throws(SwitchError) -> T {
        guard after != records else {
            // Nothing recorded to remove (the backend names what is missing).
            return try await remove()
        }
        do throws(SwitchError) {
            try store.save(after)
        } catch {
            logger.error("cannot record state; nothing removed", metadata: ["error": "\(error.message)"])
            throw error.context("\(refusal): cannot record state")
        }
        do throws(SwitchError) {
            let result = try await remove()
            records = after
            return result
        } catch {
            do throws(SwitchError) { try store.save(records) } catch {
                logger.error("cannot record state after a failed removal", metadata: ["error": "\(error.message)"])
            }
            throw error
        }
    }

    // MARK: - Config

    /// Starts the ports and VMs `config` declares that are not running yet; returns one line per failure.
    /// Running ports are never touched.
    public func applyDeclared(_ config: DaemonConfig, skipping previouslyDeclared: StateRecords = StateRecords()) async -> [String] {
        await serially {
            var failures: [String] = []
            let skipNames = previouslyDeclared.portNames
            let skipVMs = Set(previouslyDeclared.vms.map(\.name))
            for spec in config.externalPorts where !records.portNames.contains(spec.device) && !skipNames.contains(spec.device) {
                do throws(SwitchError) { _ = try await addExternal(spec) } catch { failures.append("external \(spec.device): \(error.message)") }
            }
            for spec in config.segments where !records.portNames.contains(spec.name) && !skipNames.contains(spec.name) {
                do throws(SwitchError) { _ = try await addSegment(spec) } catch { failures.append("segment \(spec.name): \(error.message)") }
            }
            for spec in config.internalPorts where !records.portNames.contains(spec.name) && !skipNames.contains(spec.name) {
                do throws(SwitchError) { _ = try await addInternal(spec) } catch { failures.append("internal \(spec.name): \(error.message)") }
            }
            for spec in config.vms where records.vm(named: spec.name) == nil && !skipVMs.contains(spec.name) {
                do throws(SwitchError) { _ = try await startVM(spec) } catch { failures.append("vm \(spec.name): \(error.message)") }
            }
            // After the ports they name.
            let skipMirrors = Set(previouslyDeclared.mirrors.map(\.name))
            for spec in config.mirrors where !records.mirrors.contains(where: { $0.name == spec.name }) && !skipMirrors.contains(spec.name) {
                do throws(SwitchError) { _ = try await addMirror(spec) } catch { failures.append("mirror \(spec.name): \(error.message)") }
            }
            return failures
        }
    }

    /// What ``recoverInterrupted(intent:)`` did, one line each (logged by the daemon).
    public struct Recovery: Sendable, Equatable {
        /// Lines for the log: what was completed, undone, adopted or removed, and why.
        public var actions: [String] = []
        /// Problems (a TAP that could not be deleted, the markers unreadable).
        public var problems: [String] = []
    }

    /// Brings the records and the kernel into agreement after a crash, before re-adoption:
    /// - the interrupted step of `intent` (left by a crash) is completed or undone: a `vm start`
    ///   whose VM was recorded stands, one not recorded is undone (its TAPs are deleted); a `vm stop`
    ///   whose VM is no longer recorded is completed (its TAPs are deleted), one still recorded
    ///   never touched a device and the VM stays;
    /// - TAPs marked as this switch's but not recorded: those marked `removing` (a recorded stop
    ///   whose deletion was interrupted or still held) are deleted; the others (their record lost
    ///   with a damaged state file) are adopted as the marker describes them (VM, NIC index, type,
    ///   settings; MAC, MTU, owner and group as the kernel shows them), or deleted when the marker
    ///   could not hold their settings (adopting them with other settings could open a VLAN).
    /// Then the intent record goes and the records are saved if they changed.
    public func recoverInterrupted(intent: Intent?) async -> Recovery {
        await serially {
            var r = Recovery()
            let before = records
            var marked: [MarkedTAP] = []
            do throws(SwitchError) { marked = try await backend.markedTAPs() } catch {
                r.problems.append("cannot read the TAPs' markers: \(error.message)")
            }
            let ours = Dictionary(marked.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            func delete(_ tap: String, _ why: String) async {
                do throws(SwitchError) {
                    try await backend.deleteLeftoverTAP(named: tap)
                    r.actions.append("deleted TAP \(tap): \(why)")
                } catch {
                    if error.code != .notFound { r.problems.append("cannot delete TAP \(tap) (\(why)): \(error.message)") }
                }
            }
            var handled = Set<String>()
            if let intent {
                let recorded = records.vm(named: intent.vm) != nil
                switch (intent.operation, recorded) {
                case (.vmStart, true):
                    r.actions.append("vm start of '\(intent.vm)' was interrupted after it was recorded: completed, the VM is re-adopted")
                case (.vmStart, false):
                    r.actions.append("vm start of '\(intent.vm)' was interrupted before it was recorded: undone")
                    for tap in intent.taps where ours[tap] != nil { await delete(tap, "interrupted vm start of '\(intent.vm)'") }
                case (.vmStop, false):
                    r.actions.append("vm stop of '\(intent.vm)' was interrupted after it was recorded: completed")
                    for tap in intent.taps where ours[tap] != nil { await delete(tap, "interrupted vm stop of '\(intent.vm)'") }
                case (.vmStop, true):
                    r.actions.append("vm stop of '\(intent.vm)' was interrupted before it was recorded: nothing was removed, the VM is re-adopted")
                }
                handled.formUnion(intent.taps)
            }
            let recordedTAPs = records.portNames
            for tap in marked.sorted(by: { ($0.marker.vm, $0.marker.nic) < ($1.marker.vm, $1.marker.nic) })
            where !handled.contains(tap.name) && !recordedTAPs.contains(tap.name) {
                let m = tap.marker
                if m.removing {
                    await delete(tap.name, "its vm stop was recorded, its deletion had not finished")
                } else if let settings = m.settings {
                    var nic = NICSpec(tap: tap.name, mac: tap.mac, owner: tap.owner.map { String($0) }, group: tap.group.map { String($0) },
                                      mtu: tap.mtu, type: m.type)
                    if let s = try? PortSettings.parse(settings) { nic.record(s) }
                    if let v = records.vms.firstIndex(where: { $0.name == m.vm }) {
                        records.vms[v].nics.append(nic)
                    } else {
                        records.vms.append(VMSpec(name: m.vm, nics: [nic]))
                    }
                    r.actions.append("adopted TAP \(tap.name) as NIC \(m.nic) of VM '\(m.vm)' from its marker (its record was lost)")
                } else {
                    await delete(tap.name, "its record was lost and its marker does not hold its settings")
                }
            }
            if records != before {
                do throws(SwitchError) { try store.save(records) } catch {
                    r.problems.append("cannot record state: \(error.message)")
                }
            }
            if intent != nil { clearIntent() }
            return r
        }
    }

    /// Re-adopts what the previous run recorded; keeps only what the backend took over.
    public func adoptRecorded() async -> AdoptionOutcome {
        await serially {
            let outcome = await backend.adopt(records)
            // Saved NIC state is handed back once: the file keeps it no longer than this.
            let handedBack = records.nicStates != nil
            records = outcome.adopted
            if !outcome.failures.isEmpty || handedBack {
                do throws(SwitchError) { try store.save(records) } catch {
                    logger.error("cannot record state", metadata: ["error": "\(error.message)"])
                }
            }
            return outcome
        }
    }

    /// NIC save before a restart: records every port's extension state (see ``SwitchBackend/saveNICStates()``)
    /// in the state file, for the next run's ``adoptRecorded()`` to hand back.
    public func saveNICStates() async {
        await serially {
            let states = await backend.saveNICStates()
            guard !states.isEmpty else { return }
            var r = records
            r.nicStates = states
            do throws(SwitchError) {
                try store.save(r)
                records = r
                logger.info("saved extension NIC state", metadata: ["ports": "\(states.count)"])
            } catch {
                logger.error("cannot record extension NIC state", metadata: ["error": "\(error.message)"])
            }
        }
    }

    /// Applies changed switch settings and extensions.
    public func reconfigure(_ config: DaemonConfig) async throws(SwitchError) {
        let r: SwitchError? = await serially {
            do throws(SwitchError) {
                // Settings first, so an extension the file enables now starts with them.
                for name in Set(config.extensionSettings.keys).union(appliedExtensionSettings.keys).sorted()
                where config.extensionSettings[name] != appliedExtensionSettings[name] {
                    try await backend.setExtensionSettings(named: name, config.extensionSettings[name] ?? [:])
                    appliedExtensionSettings[name] = config.extensionSettings[name]
                }
                try await backend.reload(config.settings, extensions: config.extensions)
                return nil
            } catch {
                return error
            }
        }
        if let r { throw r }
    }
}
