import ControlProtocol
import DataPlane
import Dispatch
import Foundation
import LinuxNet
import Logging
import PacketCapture
import ServiceSupport
import StateStore
import SwitchCore
import SwitchExtensions

/// The real backend: the switch core on the Linux data plane (TAPs, AF_PACKET, netlink).
///
/// An actor: VM bookkeeping (which TAPs belong to which VM) is serialised here; the switch itself
/// lives on the DataPlane's packet-loop queue (see ``SwitchRuntime``). Errors are the shared
/// ``SwitchError``: the core's and the data plane's codes reach the control client unchanged.
public actor DataPlaneBackend: SwitchBackend {
    public nonisolated let kind: String
    /// The host's devices; nil means the real ones (``LinuxDeviceLayer``).
    private let devices: (any DeviceLayer)?

    private let hub = EventHub()
    private let logger: Logger
    private var runtime: SwitchRuntime?
    private var settings = SwitchSettings()
    private var enabled: [String] = []
    private var vms: [String: VMSpec] = [:]
    private var internals: [String: InternalPortSpec] = [:]
    private var externals: [String: ExternalPortSpec] = [:]
    private var segmentSpecs: [String: SegmentSpec] = [:]
    /// EVPN MAC+IP: the neighbour entries this daemon keeps on EVPN segments' bridges, and the task
    /// that refreshes them (addresses DHCP snooping grants come and go without a control request).
    private var evpnNeighbours: [EVPNNeighbour: MACAddress] = [:]
    private var neighbourRefresher: Task<Void, Never>?
    /// Port mirrors, in the order they were added.
    private var mirrorSpecs: [MirrorSpec] = []
    /// Ports whose removal waits for references (TAP name -> when it started, whether the TAP
    /// goes when PORT_DELETE completes).
    private var pendingRemovals: [String: PendingRemoval] = [:]
    private var holdReportAfter: Duration = .seconds(30)
    private let started = Date()

    private struct PendingRemoval {
        var since: ContinuousClock.Instant
        var deleteTAP: Bool
        var vm: String?
        var reporter: Task<Void, Never>?
        /// Tells this removal's completion from that of an earlier port with the same name.
        var token: UInt64
    }
    private var nextRemovalToken: UInt64 = 0
    /// The switch identity in the markers of the TAPs it creates (nil: no markers).
    private var markerID: String?
    private var lostHandler: (@Sendable (LostPort) -> Void)?

    /// The extensions this backend can enable, in their default order.
    private let offered: [ExtensionFactory]

    /// An extension the backend can enable by name.
    public struct ExtensionFactory: Sendable {
        public let name: String
        public let extensionClass: ExtensionClass
        public let summary: String
        /// Builds one from its settings, refusing unknown or invalid ones.
        public let make: @Sendable (ExtensionSettings) throws(SwitchError) -> any SwitchExtension

        public init(name: String, extensionClass: ExtensionClass, summary: String,
                    make: @escaping @Sendable (ExtensionSettings) throws(SwitchError) -> any SwitchExtension) {
            self.name = name
            self.extensionClass = extensionClass
            self.summary = summary
            self.make = make
        }

        /// An extension that takes no settings.
        public init(name: String, extensionClass: ExtensionClass, summary: String, make: @escaping @Sendable () -> any SwitchExtension) {
            self.init(name: name, extensionClass: extensionClass, summary: summary) { (s: ExtensionSettings) throws(SwitchError) in
                try s.check(extension: name, known: [])
                return make()
            }
        }
    }

    /// The extensions shipped with tapswitch (the `SwitchExtensions` registry).
    public static let shippedExtensions: [ExtensionFactory] = ExtensionRegistry.builtin.entries.map {
        ExtensionFactory(name: $0.name, extensionClass: $0.extensionClass, summary: $0.summary, make: $0.make)
    }

    /// Settings given per extension (`[extensions.NAME]`, `extension set`).
    private var extensionSettings: [String: ExtensionSettings] = [:]

    /// - Parameter extensions: what can be enabled (the shipped ones; tests add their own).
    /// - Parameters:
    ///   - devices: the host's devices; nil means the real ones. The device-free test daemon passes
    ///     an in-memory layer: everything else (switch, packet loop, this backend) is the same.
    ///   - extensions: what can be enabled (the shipped ones; tests add their own).
    public init(logger: Logger = Logger(label: "tapswitch.backend"), devices: (any DeviceLayer)? = nil, kind: String = "dataplane",
                extensions: [ExtensionFactory] = DataPlaneBackend.shippedExtensions) {
        self.logger = logger
        self.devices = devices
        self.kind = kind
        offered = extensions
    }

    public nonisolated func availableExtensions() -> [ExtensionDescriptor] {
        offered.map {
            ExtensionDescriptor(name: $0.name, class: $0.extensionClass, summary: $0.summary)
        }
    }

    /// Runs `body` on the switch, between two batches (tests and diagnostics).
    package func withSwitch<T: Sendable>(_ body: @escaping @Sendable (VirtualSwitch) -> T) async -> T? {
        guard let rt = runtime else { return nil }
        return await rt.withSwitch(body)
    }

    public func configure(_ settings: SwitchSettings, extensions: [String], offloadLater: Bool) async throws(SwitchError) {
        let config = SwitchConfiguration(name: settings.name, macTableSize: settings.macTableSize, macLimitPerPort: settings.macLimitPerPort,
                                         macAgingSeconds: UInt64(settings.macAgingSeconds),
                                         unknownUnicast: settings.unknownUnicast)
        let rt: SwitchRuntime
        do {
            rt = try SwitchRuntime(configuration: config, devices: devices, busyPollMicroseconds: settings.busyPollMicroseconds, logger: logger)
            try rt.start()
        } catch {
            throw SwitchError(.system, "cannot start the data plane: \(error)")
        }
        let hub = self.hub
        rt.addEventHandler { event in Self.publish(event, to: hub) }
        rt.setPortLostHandler { [self] name in
            // On the packet-loop queue: hop off it.
            Task(executorPreference: DaemonExecutor.shared) { await self.portLost(name) }
        }
        runtime = rt
        self.settings = settings
        await applyTransmit(settings.transmit, on: rt)
        try await enable(extensions)
        if offloadLater {
            offloadPending = true
            return
        }
        let offloadLine = await rt.setOffload(enabled: settings.offload == .xdp)
        logger.notice("\(offloadLine)")
    }

    /// The fast path waits for ``startOffload()`` (``configure(_:extensions:offloadLater:)``).
    private var offloadPending = false

    public func startOffload() async -> String? {
        guard offloadPending, let rt = runtime else { return nil }
        offloadPending = false
        let line = await rt.setOffload(enabled: settings.offload == .xdp)
        logger.notice("\(line)")
        return line
    }

    public func reload(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError) {
        let rt = try running()
        await rt.setUnknownUnicast(settings.unknownUnicast)
        await rt.setBusyPoll(microseconds: settings.busyPollMicroseconds)
        self.settings.busyPollMicroseconds = settings.busyPollMicroseconds
        if settings.macTableSize != self.settings.macTableSize || settings.macLimitPerPort != self.settings.macLimitPerPort
            || settings.macAgingSeconds != self.settings.macAgingSeconds || settings.name != self.settings.name {
            logger.warning("switch name and MAC table sizes/aging take effect at the next daemon start")
        }
        if settings.transmit != self.settings.transmit {
            await applyTransmit(settings.transmit, on: rt)
            self.settings.transmit = settings.transmit
        }
        self.settings.unknownUnicast = settings.unknownUnicast
        try await applyExtensionList(extensions)
        if settings.offload != self.settings.offload {
            offloadPending = false
            let offloadLine = await rt.setOffload(enabled: settings.offload == .xdp)
            logger.notice("\(offloadLine)")
            self.settings.offload = settings.offload
        }
    }

    /// `[switch] transmit` on every port (and the ports plugged in later), between two batches.
    private func applyTransmit(_ path: TransmitPath, on rt: SwitchRuntime) async {
        let failed = await rt.setTransmit(throughQdisc: path == .qdisc)
        let what = path == .qdisc
            ? "sends go through the qdisc (tcpdump -i on a port's device sees both directions of slow-path frames)"
            : "sends bypass the qdisc (tcpdump -i on a VM's TAP sees only what the VM sends; tapswitchctl capture sees both)"
        logger.notice("transmit \(path.rawValue): \(what)")
        for f in failed { logger.error("transmit \(path.rawValue) not applied on \(f)") }
    }

    /// Makes the enabled extensions exactly `names`, in that order within each class: disables
    /// those no longer listed, enables new ones, then moves each to its listed place. Each step
    /// takes effect on the next batch; ports are not disturbed.
    private func applyExtensionList(_ names: [String]) async throws(SwitchError) {
        let rt = try running()
        for name in enabled where !names.contains(name) {
            do { try await rt.disableExtension(named: name) } catch { throw error.context("cannot disable extension '\(name)'") }
            enabled.removeAll { $0 == name }
            logger.notice("extension disabled", metadata: ["extension": "\(name)"])
        }
        let added = names.filter { !enabled.contains($0) }
        try await enable(added)
        for name in added { logger.notice("extension enabled", metadata: ["extension": "\(name)"]) }
        for extensionClass in ExtensionClass.allCases {
            let band = names.filter { n in offered.first { $0.name == n }?.extensionClass == extensionClass }
            for (position, name) in band.enumerated() {
                do { try await rt.moveExtension(named: name, to: position) } catch {
                    throw error.context("cannot move extension '\(name)' to position \(position)")
                }
            }
        }
        enabled = names
    }

    private func enable(_ names: [String]) async throws(SwitchError) {
        for name in names { try await enable(name, position: nil, top: false) }
    }

    /// Builds `name` with its settings now (so bad settings fail here, naming the key), then
    /// enables it on the packet-loop queue.
    private func enable(_ name: String, position: Int?, top: Bool) async throws(SwitchError) {
        let rt = try running()
        let make = try maker(name)
        do { try await rt.enableExtension(position: position ?? (top ? 0 : nil), make) } catch {
            throw error.context("cannot enable extension '\(name)'")
        }
        enabled.append(name)
    }

    private func maker(_ name: String) throws(SwitchError) -> @Sendable () -> any SwitchExtension {
        guard let entry = offered.first(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "unknown extension '\(name)' (available: \(offered.map(\.name).joined(separator: ", ")))")
        }
        let settings = extensionSettings[name] ?? ExtensionSettings()
        _ = try entry.make(settings)
        // Built again on the queue that owns the switch (extensions need not be Sendable).
        return {
            do { return try entry.make(settings) } catch { preconditionFailure("settings of \(name) were checked: \(error)") }
        }
    }

    public func enableExtension(named name: String, position: Int?) async throws(SwitchError) {
        if enabled.contains(name) { throw SwitchError(.exists, "extension '\(name)' is already enabled") }
        try await enable(name, position: position, top: true)
    }

    public func disableExtension(named name: String) async throws(SwitchError) {
        let rt = try running()
        guard enabled.contains(name) else { throw SwitchError(.notFound, "extension '\(name)' is not enabled") }
        try await rt.disableExtension(named: name)
        enabled.removeAll { $0 == name }
    }

    public func setExtensionSettings(named name: String, _ settings: [String: String]) async throws(SwitchError) {
        let old = extensionSettings[name]
        extensionSettings[name] = ExtensionSettings(settings)
        do throws(SwitchError) {
            let make = try maker(name)
            if enabled.contains(name) { try await running().replaceExtension(named: name, make) }
        } catch {
            extensionSettings[name] = old
            throw error
        }
    }

    // MARK: - VMs

    public func startVM(_ spec: VMSpec) async throws(SwitchError) -> [PortInfo] {
        try checkSegmentMTU(spec)
        return try await startVM(spec, restore: false)
    }

    /// A VM NIC on a segment's VLAN with a larger MTU than the segment carries would lose its big
    /// frames in the VXLAN device: refused, naming the NIC, the segment and the MTU to use.
    private func checkSegmentMTU(_ spec: VMSpec) throws(SwitchError) {
        for nic in spec.nics {
            let mtu = nic.mtu ?? NICSpec.defaultMTU
            var vlans = Set<Int>()
            for case .vlan(let policy) in try nic.portSettings().properties {
                switch policy {
                case .access(let v): vlans.insert(Int(v))
                case .trunk(let allowed, let native):
                    vlans.formUnion(allowed.map(Int.init))
                    if let native, native != 0 { vlans.insert(Int(native)) }
                case .untagged: break
                }
            }
            if let segment = segmentSpecs.values.sorted(by: { $0.name < $1.name }).first(where: { vlans.contains($0.vlan) && mtu > $0.mtu }) {
                throw SwitchError(.invalidArgument, "NIC \(nic.tap): MTU \(mtu) is larger than the MTU \(segment.mtu) that segment \(segment.name) "
                    + "carries on VLAN \(segment.vlan); give the NIC mtu=\(segment.mtu) (and the guest the same)")
            }
        }
    }

    private func startVM(_ spec: VMSpec, restore: Bool, saved: [String: [ExtensionNICState]] = [:]) async throws(SwitchError) -> [PortInfo] {
        let rt = try running()
        if vms[spec.name] != nil { throw SwitchError(.exists, "VM '\(spec.name)' is already running") }
        for nic in spec.nics where pendingRemovals[nic.tap] != nil {
            throw SwitchError(.exists, "TAP '\(nic.tap)' is still being removed (references hold its NIC; see 'tapswitchctl events')")
        }
        var created: [String] = []
        var failedNICs: [SwitchError] = []
        var resolved = spec
        for (i, nic) in spec.nics.enumerated() {
            let mac = nic.mac ?? Self.randomMAC()
            resolved.nics[i].mac = mac
            do throws(SwitchError) {
                let owner = try nic.owner.map { n throws(SwitchError) in try Self.uid(n) }
                let group = try nic.group.map { n throws(SwitchError) in try Self.gid(n) }
                let settings = try nic.portSettings()
                let marker = markerText(vm: spec.name, index: i, nic: nic, settings: settings)
                var nicSpec = VMNICSpec(vmName: spec.name, tap: nic.tap, mac: mac, owner: owner, group: group,
                                        mtu: UInt32(nic.mtu ?? NICSpec.defaultMTU), type: nic.type,
                                        properties: settings.properties, marker: marker)
                nicSpec.savedStates = Self.switchStates(saved[nic.tap])
                try await rt.startVMNIC(nicSpec, isRestore: restore)
                created.append(nic.tap)
                if restore, let marker {
                    // An adopted TAP gets the current marker (made by an older version, or settings changed).
                    do throws(SwitchError) { try rt.setMarker(named: nic.tap, marker) } catch {
                        logger.warning("cannot mark adopted TAP", metadata: ["tap": "\(nic.tap)", "error": "\(error.message)"])
                    }
                }
                if !restore { CrashPoint.reach("vm-start:nic-plugged") }
            } catch {
                if restore {
                    // Re-adoption: the VM keeps running on the NICs already adopted and QEMU may
                    // hold every TAP, so nothing is rolled back or deleted. The NIC that failed
                    // keeps its TAP and its record (`vm stop` removes it later).
                    failedNICs.append(error.context("NIC \(nic.tap)"))
                    continue
                }
                // Roll back the NICs this call already plugged in: nothing stays behind.
                for tap in created.reversed() { try? await rt.removePort(named: tap) }
                throw error
            }
        }
        if restore, !failedNICs.isEmpty {
            if created.isEmpty { throw SwitchError(failedNICs[0].code, failedNICs.map(\.message).joined(separator: "; ")) }
            vms[spec.name] = resolved
            throw SwitchError(.invalidState, "VM '\(spec.name)' re-adopted partly (\(created.joined(separator: ", ")) forwarding); "
                + failedNICs.map(\.message).joined(separator: "; "))
        }
        vms[spec.name] = resolved
        await syncEVPNNeighbours()
        let snapshot = await snapshot()
        return created.compactMap { tap in snapshot.ports.first { $0.name == tap } }
    }

    public func stopVM(named name: String, force: Bool) async throws(SwitchError) -> [String] {
        let rt = try running()
        guard let spec = vms[name] else { throw SwitchError(.notFound, "no running VM named '\(name)'") }
        let taps = Set(spec.nics.map(\.tap))
        let inSwitch = await rt.snapshot().ports.filter { taps.contains($0.port.name) }
        if !force {
            // Deleting a TAP under a running guest cuts its network without a word: refuse, and
            // change nothing, while QEMU is attached (the TAP has carrier).
            let attached = rt.attachedTAPs(spec.nics.map(\.tap))
            if !attached.isEmpty {
                throw SwitchError(.busy, "VM '\(name)' is still attached: TAP \(attached.joined(separator: ", ")) "
                    + "\(attached.count == 1 ? "is" : "are") in use by its guest; stop the guest first, or use --force to remove the TAPs under it")
            }
        }
        var failures: [String] = []
        var pending: [String] = []
        for (i, nic) in spec.nics.enumerated() {
            // The stop is recorded: a restart that finds this TAP (its deletion interrupted, or
            // still held by references) deletes it.
            if let markerID {
                let marker = TapMarker(switchID: markerID, vm: name, nic: i, type: nic.type, removing: true,
                                       settings: (try? nic.portSettings())?.assignments)
                do throws(SwitchError) { try rt.setMarker(named: nic.tap, marker.text) } catch {
                    if error.code != .notFound { logger.warning("cannot mark TAP as being removed", metadata: ["tap": "\(nic.tap)", "error": "\(error.message)"]) }
                }
            }
            guard inSwitch.contains(where: { $0.port.name == nic.tap }) else {
                // Recorded but not in the switch (a NIC that failed re-adoption): its TAP is ours.
                do throws(SwitchError) { try rt.deleteTAP(named: nic.tap) } catch {
                    if error.code != .notFound {
                        logger.warning("vm stop: leftover TAP not deleted", metadata: ["tap": "\(nic.tap)", "error": "\(error.message)"])
                    }
                }
                continue
            }
            do throws(SwitchError) {
                if try await beginRemoval(nic.tap, runtime: rt, deleteTAP: true, vm: name) { pending.append(nic.tap) }
            } catch {
                // A TAP deleted by hand already took its port with it.
                if error.code != .notFound { failures.append(error.message) }
            }
        }
        vms[name] = nil
        await syncEVPNNeighbours()
        withdrawLocal(spec.nics.compactMap(\.mac), runtime: rt)
        if !failures.isEmpty { throw SwitchError(.system, failures.joined(separator: "; ")) }
        return pending
    }

    /// Starts the stop sequence of one port and returns once NIC_DISCONNECT has gone down the
    /// stack: true when references hold the rest, which then completes by itself
    /// (``removalFinished(_:token:)``), reported after `holdReportAfter` and at doubling intervals
    /// while it waits.
    private func beginRemoval(_ name: String, runtime rt: SwitchRuntime, deleteTAP: Bool, vm: String?,
                              deleteAnyDevice: Bool = false) async throws(SwitchError) -> Bool {
        let started = ContinuousClock.now
        nextRemovalToken += 1
        let token = nextRemovalToken
        let deleted: @Sendable (PortBacking) -> Void = { [self] _ in
            // On the packet-loop queue: hop off it before any device work.
            Task(executorPreference: DaemonExecutor.shared) { await self.removalFinished(name, token: token) }
        }
        let (pending, backing) = try await rt.beginRemovePort(named: name, deleted: deleted)
        // A segment's VXLAN device is tapswitch's too (an ordinary uplink is never deleted).
        let dropTAP = deleteTAP && (backing == .vmTAP || deleteAnyDevice)
        if !pending {
            if dropTAP { try rt.deleteTAP(named: name) }
            return false
        }
        // No suspension between the answer above and this entry: `removalFinished` runs on this
        // actor and finds it.
        let reporter = Task(executorPreference: DaemonExecutor.shared) { [holdReportAfter] in
            // Reported after the configured time, then after twice as long each time (a NIC held
            // for hours does not flood the log), at most hourly.
            var wait = holdReportAfter
            while !Task.isCancelled {
                do { try await Task.sleep(for: wait) } catch { return }
                await self.reportHeld(name)
                wait = min(wait * 2, .seconds(3600))
            }
        }
        pendingRemovals[name] = PendingRemoval(since: started, deleteTAP: dropTAP, vm: vm, reporter: reporter, token: token)
        logger.notice("removal pending: references hold the NIC", metadata: ["port": "\(name)"])
        return true
    }

    /// PORT_DELETE completed for a port whose removal was pending: delete its TAP now.
    private func removalFinished(_ name: String, token: UInt64) {
        guard let p = pendingRemovals[name], p.token == token else { return }
        pendingRemovals[name] = nil
        p.reporter?.cancel()
        var meta: Logger.Metadata = ["port": "\(name)", "waited": "\(ContinuousClock.now - p.since)"]
        if let vm = p.vm { meta["vm"] = "\(vm)" }
        if p.deleteTAP, let rt = runtime {
            do throws(SwitchError) { try rt.deleteTAP(named: name) } catch {
                logger.error("pending removal finished, but the TAP could not be deleted", metadata: meta.merging(["error": "\(error.message)"]) { $1 })
                return
            }
        }
        logger.notice("pending removal finished", metadata: meta)
    }

    /// Logs and publishes who still holds a pending removal.
    private func reportHeld(_ name: String) async {
        guard let p = pendingRemovals[name], let rt = runtime else { return }
        let waited = ContinuousClock.now - p.since
        guard let hold = await rt.holders(named: name), pendingRemovals[name] != nil else { return }
        var parts = hold.extensions.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) NIC reference\($0.value == 1 ? "" : "s"))" }
        if hold.pendedFrames > 0 { parts.append("\(hold.pendedFrames) pended frame\(hold.pendedFrames == 1 ? "" : "s")") }
        if hold.portReferences > 0 { parts.append("\(hold.portReferences) port reference\(hold.portReferences == 1 ? "" : "s")") }
        let ms = waited.components.seconds * 1000 + waited.components.attoseconds / 1_000_000_000_000_000
        let detail = "removal waiting \(ms / 1000).\(ms % 1000 / 100) s, held by: \(parts.isEmpty ? "unknown" : parts.joined(separator: ", "))"
        var meta: Logger.Metadata = ["port": "\(name)", "detail": "\(detail)"]
        if let vm = p.vm { meta["vm"] = "\(vm)" }
        logger.warning("NIC still held: removal cannot complete", metadata: meta)
        hub.publish(.nicHeld, portId: hold.portID, portName: name, nicIndex: hold.hasNIC ? 0 : nil, vmName: p.vm, detail: detail)
    }

    public func setNICHoldReport(seconds: Double) async {
        holdReportAfter = .milliseconds(Int64(max(0.001, seconds) * 1000))
    }

    public func setPortLostHandler(_ handler: @escaping @Sendable (LostPort) -> Void) async {
        lostHandler = handler
    }

    /// The switch removed port `name` by itself (its device vanished or failed): forget it, and
    /// the VM once its last NIC is gone, so `vm start` works again; the daemon records it.
    private func portLost(_ name: String) {
        var lost = LostPort(name: name, vm: nil, vmGone: false)
        if var vm = vms.values.first(where: { $0.nics.contains { $0.tap == name } }) {
            vm.nics.removeAll { $0.tap == name }
            lost.vm = vm.name
            lost.vmGone = vm.nics.isEmpty
            vms[vm.name] = vm.nics.isEmpty ? nil : vm
        } else if internals.removeValue(forKey: name) == nil, externals.removeValue(forKey: name) == nil,
                  segmentSpecs.removeValue(forKey: segmentSpecs.values.first { $0.portName == name }?.name ?? name) == nil {
            return  // not one of ours any more (removed meanwhile)
        }
        var meta: Logger.Metadata = ["port": "\(name)"]
        if let vm = lost.vm { meta["vm"] = "\(vm)" }
        logger.warning(lost.vmGone ? "device lost: the VM's last NIC is gone, VM forgotten" : "device lost: port forgotten", metadata: meta)
        lostHandler?(lost)
    }

    // MARK: - Internal and external ports

    public func addInternalPort(_ spec: InternalPortSpec) async throws(SwitchError) -> PortInfo {
        let rt = try running()
        let mac = spec.mac ?? Self.randomMAC()
        try await rt.addInternalPort(name: spec.name, mac: mac, netns: spec.netns, properties: try PortSettings.parse(spec.settings).properties)
        var recorded = spec
        recorded.mac = mac
        internals[spec.name] = recorded
        await syncEVPNNeighbours()
        return try await portInfo(spec.name)
    }

    public func addExternalPort(_ spec: ExternalPortSpec) async throws(SwitchError) -> PortInfo {
        let rt = try running()
        if externals[spec.device] != nil {
            throw SwitchError(.exists, "\(spec.device) is already an external port of the switch")
        }
        try await rt.addExternalPort(device: spec.device, properties: try PortSettings.parse(spec.settings).properties)
        externals[spec.device] = spec
        return try await portInfo(spec.device)
    }

    public func aclInfo(named name: String) async throws(SwitchError) -> PortACLInfo {
        let rt = try running()
        let info: PortACLInfo? = await rt.withSwitch { sw in
            guard let port = sw.port(named: name) else { return nil }
            let acl = PortSettings(properties: sw.properties(of: port.id)).acl
            guard let filter = sw.enabledExtension(named: PortACLFilter.extensionName) as? PortACLFilter,
                  let report = filter.ruleHits(port: port.id, in: sw) else { return PortACLInfo(port: name, acl: acl) }
            return PortACLInfo(port: name, rules: report.rules.map { ACLRuleInfo($0.rule, hits: $0.hits) },
                               defaultIn: report.defaultIn.rawValue, defaultOut: report.defaultOut.rawValue,
                               defaultInHits: report.defaultInHits, defaultOutHits: report.defaultOutHits, enforced: true)
        }
        guard let info else { throw SwitchError(.notFound, "no port named '\(name)'") }
        return info
    }

    public func setPortSettings(named name: String, _ settings: PortSettings) async throws(SwitchError) -> PortInfo {
        let rt = try running()
        try await rt.setPortSettings(named: name, settings)
        // Keep the specs this backend reports from in step (the service records them durably).
        for (vm, spec) in vms {
            if let i = spec.nics.firstIndex(where: { $0.tap == name }) { vms[vm]?.nics[i].record(settings) }
        }
        internals[name]?.settings = settings.assignments
        externals[name]?.settings = settings.assignments
        for spec in vms.values {
            guard let i = spec.nics.firstIndex(where: { $0.tap == name }),
                  let marker = markerText(vm: spec.name, index: i, nic: spec.nics[i], settings: settings) else { continue }
            // The marker carries the settings, for a restart that lost state.json.
            do throws(SwitchError) { try rt.setMarker(named: name, marker) } catch {
                logger.warning("cannot update the TAP's marker", metadata: ["tap": "\(name)", "error": "\(error.message)"])
            }
        }
        await syncEVPNNeighbours()
        let port = try await portInfo(name)
        hub.publish(.portProperty, portId: port.id, portName: name, vmName: port.nic?.vmName,
                    detail: settings.assignments.isEmpty ? "defaults" : settings.assignments.joined(separator: " "))
        return port
    }

    public func removePort(named name: String) async throws(SwitchError) -> Bool {
        let rt = try running()
        if let vm = vms.values.first(where: { $0.nics.contains { $0.tap == name } }) {
            throw SwitchError(.invalidState, "port '\(name)' belongs to VM '\(vm.name)'; use 'vm stop \(vm.name)'")
        }
        if let segment = segmentSpecs.values.first(where: { $0.portName == name }) {
            throw SwitchError(.invalidState, "port '\(name)' is segment \(segment.name)'s; use 'segment del \(segment.name)'")
        }
        guard internals[name] != nil || externals[name] != nil else {
            throw SwitchError(.notFound, "no port named '\(name)'")
        }
        let pending = try await beginRemoval(name, runtime: rt, deleteTAP: false, vm: nil)
        let mac = internals[name]?.mac
        internals[name] = nil
        externals[name] = nil
        await syncEVPNNeighbours()
        if let mac { withdrawLocal([mac], runtime: rt) }
        return pending
    }

    // MARK: - Segments

    public func addSegment(_ spec: SegmentSpec) async throws(SwitchError) -> PortInfo {
        try await addSegment(spec, restore: false)
    }

    private func addSegment(_ spec: SegmentSpec, restore: Bool) async throws(SwitchError) -> PortInfo {
        let rt = try running()
        if segmentSpecs[spec.name] != nil { throw SwitchError(.exists, "segment \(spec.name) already exists") }
        if let other = segmentSpecs.values.first(where: { $0.vlan == spec.vlan }) {
            throw SwitchError(.exists, "VLAN \(spec.vlan) is already carried by segment \(other.name)")
        }
        if let other = segmentSpecs.values.first(where: { $0.vni == spec.vni }) {
            throw SwitchError(.exists, "VNI \(spec.vni) is already segment \(other.name)'s")
        }
        if pendingRemovals[spec.name] != nil {
            throw SwitchError(.exists, "segment \(spec.name) is still being removed (references hold its port; see 'tapswitchctl events')")
        }
        try await rt.addSegment(SegmentDevice(name: spec.name, vlan: VLANID(spec.vlan), vni: UInt32(spec.vni), local: spec.local,
                                              underlay: spec.underlay, flood: spec.flood, udpPort: UInt16(spec.udpPort),
                                              learning: spec.learning, ageing: UInt32(spec.ageing), mtu: UInt32(spec.mtu), overhead: UInt32(spec.overhead),
                                              evpn: spec.evpn ? .init(bridge: spec.bridgeName, port: spec.portName, bridgePort: spec.bridgePortName) : nil),
                                isRestore: restore)
        segmentSpecs[spec.name] = spec
        if spec.evpn {
            await syncEVPNNeighbours()
            startNeighbourRefresher()
        }
        return try await portInfo(spec.portName)
    }

    public func removeSegment(named name: String) async throws(SwitchError) -> Bool {
        let rt = try running()
        guard let spec = segmentSpecs[name] else { throw SwitchError(.notFound, "no segment named '\(name)'") }
        let pending = try await beginRemoval(spec.portName, runtime: rt, deleteTAP: true, vm: nil, deleteAnyDevice: true)
        segmentSpecs[name] = nil
        // The bridge goes with its neighbour entries.
        evpnNeighbours = evpnNeighbours.filter { $0.key.bridge != spec.bridgeName }
        if spec.evpn {
            // The switch's port was the veth end (gone with its pair); the VXLAN device and bridge go too.
            for device in [spec.name, spec.bridgeName] {
                do throws(SwitchError) { try rt.deleteTAP(named: device) } catch {
                    logger.warning("segment del: device not deleted", metadata: ["device": "\(device)", "error": "\(error.message)"])
                }
            }
        }
        return pending
    }

    /// EVPN: VMs that left this switch are forgotten by each EVPN segment's bridge at once, so zebra
    /// withdraws their MACs (type-2 routes) now instead of after the bridge's ageing time.
    private func withdrawLocal(_ macs: [MACAddress], runtime rt: SwitchRuntime) {
        for spec in segmentSpecs.values where spec.evpn {
            for mac in macs where rt.forgetLocalMAC(mac, bridgePort: spec.bridgePortName) {
                logger.info("EVPN: local MAC withdrawn", metadata: ["segment": "\(spec.name)", "mac": "\(mac)"])
            }
        }
    }

    /// EVPN MAC+IP: every VM NIC or internal port on an EVPN segment's VLAN (access ports) whose
    /// addresses are known (host addresses in its `allowed-ips`, and leases ip-guard's DHCP snooping
    /// granted) gets a neighbour entry address -> MAC on the segment's bridge, so zebra advertises a
    /// MAC+IP type-2 route; entries whose port, address or segment went are deleted (the route is
    /// withdrawn). Called after every change to ports, settings and segments, and every few seconds.
    private func syncEVPNNeighbours() async {
        guard let rt = runtime else { return }
        let bridges = Dictionary(segmentSpecs.values.filter(\.evpn).map { ($0.vlan, $0.bridgeName) }) { a, _ in a }
        var desired: [EVPNNeighbour: MACAddress] = [:]
        if !bridges.isEmpty {
            let names = Set(vms.values.flatMap { $0.nics.map(\.tap) }).union(internals.keys)
            let known: [(vlan: Int, ip: IPPrefix, mac: MACAddress)] = await rt.withSwitch { sw in
                let ipGuard = sw.enabledExtension(named: IPGuard.extensionName) as? IPGuard
                var out: [(vlan: Int, ip: IPPrefix, mac: MACAddress)] = []
                for port in sw.ports where names.contains(port.name) {
                    guard let nic = sw.nic(of: port.id) else { continue }
                    let settings = PortSettings(properties: sw.properties(of: port.id))
                    guard case .access(let vlan)? = settings.vlan else { continue }
                    let leased = ipGuard?.leases(of: port.id, in: sw) ?? []
                    for ip in settings.security.allowedIPs + leased where ip.length == (ip.family == .ipv4 ? 32 : 128) {
                        out.append((Int(vlan), ip, nic.currentMAC))
                    }
                }
                return out
            }
            for k in known {
                guard let bridge = bridges[k.vlan] else { continue }
                desired[EVPNNeighbour(bridge: bridge, ip: k.ip)] = k.mac
            }
        }
        for (key, _) in evpnNeighbours where desired[key] == nil {
            if rt.deleteNeighbour(bridge: key.bridge, ip: key.ip) {
                logger.info("EVPN: local MAC+IP withdrawn", metadata: ["bridge": "\(key.bridge)", "ip": "\(key.ip)"])
            }
        }
        var installed: [EVPNNeighbour: MACAddress] = [:]
        for (key, mac) in desired {
            if evpnNeighbours[key] == mac {
                installed[key] = mac
                continue
            }
            do throws(SwitchError) {
                try rt.setNeighbour(bridge: key.bridge, ip: key.ip, mac: mac)
                installed[key] = mac
                logger.info("EVPN: local MAC+IP advertised", metadata: ["bridge": "\(key.bridge)", "ip": "\(key.ip)", "mac": "\(mac)"])
            } catch {
                logger.warning("EVPN: cannot add a neighbour entry", metadata: ["error": "\(error.message)"])
            }
        }
        evpnNeighbours = installed
    }

    /// Refreshes the EVPN neighbour entries every 5 s while the backend runs (snooped leases).
    private func startNeighbourRefresher() {
        guard neighbourRefresher == nil else { return }
        neighbourRefresher = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                guard let self, !Task.isCancelled else { return }
                await self.syncEVPNNeighbours()
            }
        }
    }

    public func segments() async -> [SegmentSpec] { segmentSpecs.values.sorted { $0.name < $1.name } }

    // MARK: - Mirrors

    public func addMirror(_ spec: MirrorSpec) async throws(SwitchError) -> MirrorInfo {
        try await addMirror(spec, restore: false)
    }

    /// `restore`: re-added from the state of a previous run; its ports may be missing (it waits for them).
    private func addMirror(_ spec: MirrorSpec, restore: Bool) async throws(SwitchError) -> MirrorInfo {
        let rt = try running()
        if mirrorSpecs.contains(where: { $0.name == spec.name }) { throw SwitchError(.exists, "mirror \(spec.name) already exists") }
        let all = mirrorSpecs + [spec]
        let statuses = try await rt.setMirrors(all.map(Self.definition), mustExist: restore ? nil : Self.definition(spec))
        mirrorSpecs = all
        hub.publish(.mirrorAdd, portId: .switchItself, portName: spec.to, detail: Self.describe(spec), restore: restore)
        return Self.info(spec, statuses.last)
    }

    public func removeMirror(named name: String) async throws(SwitchError) {
        let rt = try running()
        guard let spec = mirrorSpecs.first(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "no mirror named '\(name)'" + (mirrorSpecs.isEmpty ? "" : " (mirrors: \(mirrorSpecs.map(\.name).joined(separator: ", ")))"))
        }
        let rest = mirrorSpecs.filter { $0.name != name }
        _ = try await rt.setMirrors(rest.map(Self.definition))
        mirrorSpecs = rest
        hub.publish(.mirrorDel, portId: .switchItself, portName: spec.to, detail: Self.describe(spec))
    }

    public func mirrors() async -> [MirrorInfo] {
        guard let rt = runtime, !mirrorSpecs.isEmpty else { return [] }
        let statuses = await rt.mirrorStatuses()
        return mirrorSpecs.map { spec in Self.info(spec, statuses.first { $0.definition.name == spec.name }) }
    }

    static func definition(_ s: MirrorSpec) -> MirrorDefinition {
        MirrorDefinition(name: s.name, sources: s.source, inbound: s.direction.includesIn, outbound: s.direction.includesOut,
                         vlan: s.vlan.map { VLANID($0) }, destination: s.to)
    }

    static func info(_ spec: MirrorSpec, _ status: MirrorStatus?) -> MirrorInfo {
        MirrorInfo(mirror: spec, active: status?.active ?? false, missing: status.flatMap { $0.missingPorts.isEmpty ? nil : $0.missingPorts },
                   frames: status?.frames ?? 0, bytes: status?.bytes ?? 0, drops: status?.drops ?? 0)
    }

    static func describe(_ s: MirrorSpec) -> String {
        "mirror \(s.name): source=\(s.source.joined(separator: ",")) direction=\(s.direction.rawValue)"
            + (s.vlan.map { " vlan=\($0)" } ?? "") + " to=\(s.to)"
    }

    // MARK: - Restart

    public func adopt(_ records: StateRecords) async -> AdoptionOutcome {
        var outcome = AdoptionOutcome(adopted: StateRecords())
        // Extensions' saved NIC state from the previous run: handed back once (NIC restore).
        let saved = records.nicStates ?? [:]
        // Frames waiting in handed-over rings are read once every recorded port is back.
        await runtime?.holdReceive()
        await runtime?.prepareReceive(forTAPs: records.vms.flatMap { $0.nics.map(\.tap) })
        for spec in records.externalPorts {
            do {
                _ = try await addExternalPort(spec)
                outcome.adopted.externalPorts.append(spec)
                await restoreNICState(saved[spec.device], named: spec.device)
            } catch {
                outcome.failures.append(.init(what: "external \(spec.device)", reason: error.message))
            }
        }
        for spec in records.segments {
            // The VXLAN device outlives the daemon: adopted with what it learned (or was given).
            do { _ = try await addSegment(spec, restore: true); outcome.adopted.segments.append(spec) } catch {
                outcome.failures.append(.init(what: "segment \(spec.name)", reason: error.message))
            }
        }
        for spec in records.internalPorts {
            // Internal ports die with the daemon that held their fd: create them again.
            do {
                _ = try await addInternalPort(spec)
                outcome.adopted.internalPorts.append(spec)
                await restoreNICState(saved[spec.name], named: spec.name)
            } catch {
                outcome.failures.append(.init(what: "internal \(spec.name)", reason: error.message))
            }
        }
        for spec in records.vms {
            // VM TAPs survive the daemon: adopt them (connecting at once if QEMU is attached), or
            // create them again if they are gone (after a host reboot).
            do { _ = try await startVM(spec, restore: true, saved: saved); outcome.adopted.vms.append(spec) } catch {
                // Partly adopted (some NICs failed): still ours, kept with every NIC so nothing is orphaned.
                if vms[spec.name] != nil { outcome.adopted.vms.append(spec) }
                outcome.failures.append(.init(what: "vm \(spec.name)", reason: error.message))
            }
        }
        for spec in records.mirrors {
            // After the ports: a mirror whose ports are gone now waits for them.
            do { _ = try await addMirror(spec, restore: true); outcome.adopted.mirrors.append(spec) } catch {
                outcome.failures.append(.init(what: "mirror \(spec.name)", reason: error.message))
            }
        }
        await runtime?.releaseReceive()
        // Entries an earlier run left on the bridges for VMs that are gone now (stopped while the
        // daemon was down) are withdrawn; the rest are taken over.
        if let rt = runtime {
            for spec in segmentSpecs.values where spec.evpn {
                for ip in rt.manualNeighbours(bridge: spec.bridgeName) {
                    evpnNeighbours[EVPNNeighbour(bridge: spec.bridgeName, ip: ip)] = MACAddress(rawValue: 0)
                }
            }
        }
        await syncEVPNNeighbours()
        return outcome
    }

    // MARK: - NIC save/restore

    public func saveNICStates() async -> [String: [ExtensionNICState]] {
        guard let rt = runtime else { return [:] }
        return await rt.saveNICStates().mapValues { states in
            states.map { ExtensionNICState(extensionName: $0.extensionName, version: $0.version, data: Data($0.data)) }
        }
    }

    public func saveNICState(named name: String) async throws(SwitchError) -> [ExtensionNICState] {
        guard let rt = runtime else { throw SwitchError(.invalidState, "the switch is not running") }
        return try await rt.saveNICState(named: name).map {
            ExtensionNICState(extensionName: $0.extensionName, version: $0.version, data: Data($0.data))
        }
    }

    public func restoreNICState(_ states: [ExtensionNICState], named name: String) async throws(SwitchError) -> [ExtensionNICState] {
        guard let rt = runtime else { throw SwitchError(.invalidState, "the switch is not running") }
        let refused = try await rt.restoreNICState(Self.switchStates(states), named: name)
        return refused.map { ExtensionNICState(extensionName: $0.extensionName, version: $0.version, data: Data($0.data)) }
    }

    private func restoreNICState(_ states: [ExtensionNICState]?, named name: String) async {
        guard let states, !states.isEmpty, let rt = runtime else { return }
        do throws(SwitchError) { try await rt.restoreNICState(Self.switchStates(states), named: name) } catch {
            logger.warning("NIC restore failed", metadata: ["port": "\(name)", "error": "\(error.message)"])
        }
    }

    static func switchStates(_ states: [ExtensionNICState]?) -> [SavedNICState] {
        (states ?? []).map { SavedNICState(extensionName: $0.extensionName, version: $0.version, data: Array($0.data)) }
    }

    // MARK: - Markers

    public func setMarkerIdentity(_ id: String) async { markerID = id }

    private func markerText(vm: String, index: Int, nic: NICSpec, settings: PortSettings?) -> String? {
        guard let markerID else { return nil }
        return TapMarker(switchID: markerID, vm: vm, nic: index, type: nic.type, settings: settings?.assignments).text
    }

    public func markedTAPs() async throws(SwitchError) -> [MarkedTAP] {
        let rt = try running()
        guard let markerID else { return [] }
        return try rt.markedTAPs(prefix: TapMarker.prefix(markerID)).compactMap { link in
            guard let alias = link.alias, let marker = TapMarker(parsing: alias, switchID: markerID) else { return nil }
            let m = link.mac
            let mac = m.count == 6 ? MACAddress(m[0], m[1], m[2], m[3], m[4], m[5]) : nil
            let who = rt.tapOwnership(link.name)
            return MarkedTAP(name: link.name, marker: marker, mac: mac, mtu: Int(link.mtu), owner: who.owner, group: who.group)
        }
    }

    public func deleteLeftoverTAP(named name: String) async throws(SwitchError) {
        let rt = try running()
        if await rt.snapshot().ports.contains(where: { $0.port.name == name }) {
            throw SwitchError(.busy, "TAP \(name) is a port of the switch; not deleted")
        }
        try rt.deleteTAP(named: name)
    }

    // MARK: - Queries

    public func snapshot() async -> SwitchSnapshot {
        guard let rt = runtime else {
            return SwitchSnapshot(settings: settings, uptimeSeconds: 0, fdbEntries: 0, ports: [])
        }
        let s = await rt.snapshot()
        let ports = s.ports.map { p in Self.portInfo(p, vms: vms, internals: internals) }
        let dp = DataPlaneCounters(batches: s.loop.batches, busyPollSeconds: Double(s.loop.busyPollNanoseconds) / 1e9,
                                   macMoves: s.loop.macMoves, floodsWithoutPort: s.loop.floodsWithoutPort,
                                   injectedFrames: s.injectedFrames, switchDrops: PortCounters(drops: s.switchDrops))
        let mirrors = await self.mirrors()
        return SwitchSnapshot(settings: settings, uptimeSeconds: Date().timeIntervalSince(started),
                              fdbEntries: s.macEntries, ports: ports, dataPlane: dp, startTime: started.timeIntervalSince1970,
                              mirrors: mirrors.isEmpty ? nil : mirrors)
    }

    public func fdb() async -> [FDBEntry] {
        guard let rt = runtime else { return [] }
        let names = Dictionary(await rt.snapshot().ports.map { ($0.port.id, $0.port.name) }, uniquingKeysWith: { a, _ in a })
        return await rt.macEntries().map {
            FDBEntry(mac: $0.mac, vlan: $0.vlan == 0 ? nil : Int($0.vlan),
                     portId: $0.port, portName: names[$0.port] ?? "?", ageSeconds: Int($0.age))
        }
    }

    public func extensions() async -> [ExtensionInfo] {
        let live = await runtime?.extensions() ?? []
        return offered.map { e in
            var info = live.first { $0.name == e.name }
                ?? ExtensionInfo(name: e.name, extensionClass: e.extensionClass, enabled: false, position: nil)
            info.summary = e.summary
            return info
        }
    }

    public func subscribeEvents() async -> EventSubscription { hub.subscribe() }

    public func continueEventNumbering(from next: UInt64, reserve: @escaping @Sendable (UInt64) throws -> Void) async throws(SwitchError) {
        try hub.continueNumbering(from: next, reserve: reserve)
    }

    public func startCapture(_ request: CaptureRequest) async throws(SwitchError) -> CaptureSession {
        let session = try await running().startCapture(ports: request.ports, inbound: request.direction.includesIn,
                                                       outbound: request.direction.includesOut, snaplen: request.snaplen,
                                                       includeDrops: request.drops)
        logger.info("capture started", metadata: ["ports": "\(request.ports.joined(separator: ","))", "direction": "\(request.direction.rawValue)"])
        return session
    }

    public func stopCapture(_ session: CaptureSession) async {
        await runtime?.stopCapture(session)
        logger.info("capture stopped", metadata: ["ports": "\(Set(session.interfaces.map(\.portName)).sorted().joined(separator: ","))",
                                                  "lost": "\(session.lostFrames)"])
    }

    public func startHeartbeat(_ heartbeat: Heartbeat) async {
        runtime?.setHeartbeat { heartbeat.beat() }
    }

    public func shutdown() async {
        neighbourRefresher?.cancel()
        neighbourRefresher = nil
        if !pendingRemovals.isEmpty {
            logger.warning("stopping with removals still pending; their TAPs stay", metadata: [
                "ports": "\(pendingRemovals.keys.sorted().joined(separator: ","))"])
        }
        for p in pendingRemovals.values { p.reporter?.cancel() }
        pendingRemovals.removeAll()
        await runtime?.shutdown()
        hub.finish()
    }

    // MARK: - Helpers

    private func running() throws(SwitchError) -> SwitchRuntime {
        guard let runtime else { throw SwitchError(.invalidState, "the switch is not configured yet") }
        return runtime
    }

    private func portInfo(_ name: String) async throws(SwitchError) -> PortInfo {
        guard let p = await snapshot().ports.first(where: { $0.name == name }) else {
            throw SwitchError(.system, "port '\(name)' vanished right after it was created")
        }
        return p
    }

    nonisolated static func publish(_ e: LifecycleEvent, to hub: EventHub) {
        var detail: String?
        if let ext = e.vetoingExtension {
            detail = "\(ext): \(e.vetoReason ?? "")"
        } else if e.kind == .nicCreate, let nic = e.nic {
            detail = "mac=\(nic.permanentMAC) mtu=\(nic.mtu)"
        } else if e.kind == .nicUpdated, let nic = e.nic {
            detail = "mac=\(nic.currentMAC) mtu=\(nic.mtu)"
        }
        // Port-level events have no NIC; a VM port's friendly name is "VM/TAP" (see SwitchRuntime.startVMNIC).
        var vm = e.nic.flatMap { $0.vmName.isEmpty ? nil : $0.vmName }
        if vm == nil, e.port.type == .synthetic || e.port.type == .emulated,
           let slash = e.port.friendlyName.lastIndex(of: "/") {
            vm = String(e.port.friendlyName[..<slash])
        }
        hub.publish(e.kind, portId: e.port.id, portName: e.port.name, nicIndex: e.nic?.index,
                    vmName: vm, detail: detail, restore: e.isRestore)
    }

    static func portInfo(_ p: PortStatus, vms: [String: VMSpec], internals: [String: InternalPortSpec]) -> PortInfo {
        var vlan: VLANPolicy?
        for case .vlan(let policy) in p.properties { vlan = policy }
        let nicSpec = vms.values.lazy.flatMap(\.nics).first { $0.tap == p.port.name }
        let nic = p.nic.map { n in
            NICInfo(index: n.index, type: n.type, vmName: n.vmName, mtu: Int(n.mtu), assignedMAC: n.permanentMAC,
                    currentMAC: n.currentMAC, state: n.state, owner: nicSpec?.owner, group: nicSpec?.group)
        }
        var netns: String?
        if case .internalTAP(let ns)? = p.backing { netns = ns }
        let settings = PortSettings(properties: p.properties).assignments
        var info = PortInfo(id: p.port.id, name: p.port.name, friendlyName: p.port.friendlyName, type: p.port.type, state: p.port.state,
                            vlanPolicy: vlan, mac: p.nic?.permanentMAC ?? internals[p.port.name]?.mac,
                            netns: netns, nic: nic, counters: p.counters, settings: settings.isEmpty ? nil : settings)
        info.offload = p.offload
        return info
    }

    static func randomMAC() -> MACAddress {
        // QEMU's locally administered 52:54:00 prefix, random host part.
        MACAddress(rawValue: 0x5254_0000_0000 | UInt64.random(in: 0...0xFF_FFFF))
    }

    static func uid(_ name: String) throws(SwitchError) -> UInt32 {
        if let n = UInt32(name) { return n }
        guard let pw = getpwnam(name) else { throw SwitchError(.invalidArgument, "owner: no such user '\(name)'") }
        return pw.pointee.pw_uid
    }

    static func gid(_ name: String) throws(SwitchError) -> UInt32 {
        if let n = UInt32(name) { return n }
        guard let gr = getgrnam(name) else { throw SwitchError(.invalidArgument, "group: no such group '\(name)'") }
        return gr.pointee.gr_gid
    }
}

/// One neighbour entry on an EVPN segment's bridge: a VM's address (the MAC it belongs to is the value).
struct EVPNNeighbour: Hashable, Sendable {
    var bridge: String
    var ip: IPPrefix
}
