import ControlProtocol
import Dispatch
import Foundation
import SwitchExtensions
import ServiceSupport
import StateStore

/// A ``SwitchBackend`` without devices: ports, NICs, the MAC table and lifecycle events live in
/// memory only, and no frame ever moves.
///
/// It runs the same lifecycle sequences and veto/rollback rules as the real switch, so the whole
/// control path (CLI, socket, state, restart adoption) is testable without privileges. It offers
/// the shipped extensions by name, of which only `duplicate-mac-guard` acts here (filtering: vetoes
/// a NIC whose MAC another port already uses), and `monitor` (capture: no-op here).
public actor InMemoryBackend: SwitchBackend {
    public nonisolated var kind: String { "in-memory" }

    private let hub = EventHub()
    private var settings = SwitchSettings()
    private var enabledExtensions: [String] = []
    private var ports: [PortID: PortInfo] = [:]
    /// VM of each VM port, also before its NIC exists (events name the VM throughout).
    private var portVM: [PortID: String] = [:]
    private var nextPortId: UInt32 = 1
    private let started = Date()
    private var heartbeatTimer: (any DispatchSourceTimer)?

    public init() {}

    public nonisolated func availableExtensions() -> [ExtensionDescriptor] {
        // The shipped extensions by name (only duplicate-mac-guard acts here: no frame moves).
        [ExtensionDescriptor(name: "monitor", class: .capture, summary: "counts frames per port (no-op in memory)")]
            + BuiltinExtensions.all.map { ExtensionDescriptor(name: $0.name, class: $0.extensionClass, summary: $0.summary) }
    }

    public func configure(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError) {
        try apply(settings, extensions: extensions)
    }

    public func reload(_ settings: SwitchSettings, extensions: [String]) async throws(SwitchError) {
        try apply(settings, extensions: extensions)
        hub.publish(.portUpdated, portId: .switchItself, portName: settings.name, detail: "switch settings reloaded")
    }

    private func apply(_ settings: SwitchSettings, extensions: [String]) throws(SwitchError) {
        let known = Set(availableExtensions().map(\.name))
        if let bad = extensions.first(where: { !known.contains($0) }) {
            throw SwitchError(.invalidArgument, "unknown extension '\(bad)' (available: \(known.sorted().joined(separator: ", ")))")
        }
        self.settings = settings
        enabledExtensions = extensions
    }

    // MARK: - VMs

    public func startVM(_ spec: VMSpec) async throws(SwitchError) -> [PortInfo] {
        try startVM(spec, restore: false)
    }

    private func startVM(_ spec: VMSpec, restore: Bool) throws(SwitchError) -> [PortInfo] {
        if ports.values.contains(where: { $0.nic?.vmName == spec.name }) {
            throw SwitchError(.exists, "VM '\(spec.name)' is already running")
        }
        for nic in spec.nics where port(named: nic.tap) != nil {
            throw SwitchError(.exists, "port '\(nic.tap)' already exists")
        }
        var created: [PortID] = []
        for (i, nicSpec) in spec.nics.enumerated() {
            let id = PortID(nextPortId)
            nextPortId += 1
            let mac = nicSpec.mac ?? generateMAC()
            let type = nicSpec.type
            let settings = try nicSpec.portSettings()
            var port = PortInfo(id: id, name: nicSpec.tap, friendlyName: "\(spec.name) nic\(i)", type: type, state: .created,
                                vlanPolicy: settings.vlan, settings: settings.assignments.isEmpty ? nil : settings.assignments)
            ports[id] = port
            portVM[id] = spec.name
            hub.publish(.portCreate, portId: id, portName: port.name, vmName: spec.name, restore: restore)
            if let veto = vetoNIC(mac: mac, portId: id) {
                hub.publish(.veto, portId: id, portName: port.name, nicIndex: 0, vmName: spec.name,
                            detail: "\(veto.extensionName): \(veto.reason)", restore: restore)
                teardown(portId: id)
                for earlier in created.reversed() { teardown(portId: earlier) }
                throw SwitchError.vetoed(extension: veto.extensionName, reason: veto.reason)
            }
            port.nic = NICInfo(index: 0, type: nicSpec.type, vmName: spec.name, mtu: nicSpec.mtu ?? NICSpec.defaultMTU,
                               assignedMAC: mac, state: .created, owner: nicSpec.owner, group: nicSpec.group)
            ports[id] = port
            hub.publish(.nicCreate, portId: id, portName: port.name, nicIndex: 0, vmName: spec.name,
                        detail: "mac=\(mac) mtu=\(port.nic?.mtu ?? 0)", restore: restore)
            created.append(id)
        }
        return created.compactMap { ports[$0] }
    }

    public func stopVM(named name: String, force: Bool) async throws(SwitchError) -> [String] {
        let ids = ports.values.filter { $0.nic?.vmName == name }.map(\.id).sorted()
        guard !ids.isEmpty else { throw SwitchError(.notFound, "no running VM named '\(name)'") }
        for id in ids { teardown(portId: id) }
        return []
    }

    public func setNICHoldReport(seconds: Double) async {}

    /// No devices here: nothing is ever lost.
    public func setPortLostHandler(_ handler: @escaping @Sendable (LostPort) -> Void) async {}

    /// The full removal sequence for one port; no veto is possible on the way down.
    private func teardown(portId id: PortID) {
        guard var port = ports[id] else { return }
        let vm = portVM.removeValue(forKey: id)
        if var nic = port.nic {
            if nic.state == .connected {
                nic.state = .disconnected
                hub.publish(.nicDisconnect, portId: id, portName: port.name, nicIndex: 0, vmName: vm)
            }
            nic.state = .deleted
            port.nic = nic
            hub.publish(.nicDelete, portId: id, portName: port.name, nicIndex: 0, vmName: vm)
        }
        port.state = .tearingDown
        ports[id] = port
        hub.publish(.portTeardown, portId: id, portName: port.name, vmName: vm)
        ports[id] = nil
        hub.publish(.portDelete, portId: id, portName: port.name, vmName: vm)
    }

    /// Simulates QEMU attaching to (carrier up) or leaving (carrier down) a TAP.
    public func simulateCarrier(tap: String, up: Bool) throws(SwitchError) {
        guard var port = port(named: tap), var nic = port.nic else { throw SwitchError(.notFound, "no VM NIC on '\(tap)'") }
        let target: NICState = up ? .connected : .disconnected
        guard nic.state != target else { return }
        nic.state = target
        port.nic = nic
        ports[port.id] = port
        hub.publish(up ? .nicConnect : .nicDisconnect, portId: port.id, portName: port.name, nicIndex: 0, vmName: nic.vmName)
    }

    // MARK: - Internal and external ports

    public func addInternalPort(_ spec: InternalPortSpec) async throws(SwitchError) -> PortInfo {
        try addInternal(spec, restore: false)
    }

    private func addInternal(_ spec: InternalPortSpec, restore: Bool) throws(SwitchError) -> PortInfo {
        if port(named: spec.name) != nil { throw SwitchError(.exists, "port '\(spec.name)' already exists") }
        let id = PortID(nextPortId)
        nextPortId += 1
        let mac = spec.mac ?? generateMAC()
        let settings = try PortSettings.parse(spec.settings)
        let port = PortInfo(id: id, name: spec.name, friendlyName: "internal \(spec.name)", type: .internal, state: .created,
                            vlanPolicy: settings.vlan, mac: mac, netns: spec.netns,
                            settings: settings.assignments.isEmpty ? nil : settings.assignments)
        ports[id] = port
        hub.publish(.portCreate, portId: id, portName: spec.name, detail: "internal mac=\(mac)", restore: restore)
        return port
    }

    public func addExternalPort(_ spec: ExternalPortSpec) async throws(SwitchError) -> PortInfo {
        try addExternal(spec, restore: false)
    }

    private func addExternal(_ spec: ExternalPortSpec, restore: Bool) throws(SwitchError) -> PortInfo {
        if port(named: spec.device) != nil { throw SwitchError(.exists, "port '\(spec.device)' already exists") }
        if ports.values.contains(where: { $0.type == .external }) {
            throw SwitchError(.exists, "the switch already has an external port")
        }
        let id = PortID(nextPortId)
        nextPortId += 1
        let settings = try PortSettings.parse(spec.settings)
        let port = PortInfo(id: id, name: spec.device, friendlyName: "uplink \(spec.device)", type: .external, state: .created,
                            vlanPolicy: settings.vlan, settings: settings.assignments.isEmpty ? nil : settings.assignments)
        ports[id] = port
        hub.publish(.portCreate, portId: id, portName: spec.device, detail: "external", restore: restore)
        return port
    }

    public func setPortSettings(named name: String, _ settings: PortSettings) async throws(SwitchError) -> PortInfo {
        guard var port = port(named: name) else { throw SwitchError(.notFound, "no port named '\(name)'") }
        port.vlanPolicy = settings.vlan
        port.settings = settings.assignments.isEmpty ? nil : settings.assignments
        ports[port.id] = port
        hub.publish(.portProperty, portId: port.id, portName: name, vmName: portVM[port.id],
                    detail: settings.assignments.isEmpty ? "defaults" : settings.assignments.joined(separator: " "))
        return port
    }

    public func removePort(named name: String) async throws(SwitchError) -> Bool {
        guard let port = port(named: name) else { throw SwitchError(.notFound, "no port named '\(name)'") }
        if let vm = port.nic?.vmName {
            throw SwitchError(.invalidState, "port '\(name)' belongs to VM '\(vm)'; use 'vm stop \(vm)'")
        }
        teardown(portId: port.id)
        return false
    }

    // MARK: - Restart

    public func adopt(_ records: StateRecords) async -> AdoptionOutcome {
        var outcome = AdoptionOutcome(adopted: StateRecords())
        for spec in records.externalPorts {
            do throws(SwitchError) {
                _ = try addExternal(spec, restore: true)
                outcome.adopted.externalPorts.append(spec)
            } catch { outcome.failures.append(.init(what: "external \(spec.device)", reason: error.message)) }
        }
        for spec in records.internalPorts {
            do throws(SwitchError) {
                _ = try addInternal(spec, restore: true)
                outcome.adopted.internalPorts.append(spec)
            } catch { outcome.failures.append(.init(what: "internal \(spec.name)", reason: error.message)) }
        }
        for spec in records.vms {
            do throws(SwitchError) {
                _ = try startVM(spec, restore: true)
                outcome.adopted.vms.append(spec)
            } catch { outcome.failures.append(.init(what: "vm \(spec.name)", reason: error.message)) }
        }
        return outcome
    }

    // MARK: - Queries

    public func snapshot() async -> SwitchSnapshot {
        SwitchSnapshot(settings: settings, uptimeSeconds: Date().timeIntervalSince(started), fdbEntries: fdbEntries().count,
                       ports: ports.values.sorted { $0.id < $1.id })
    }

    public func fdb() async -> [FDBEntry] { fdbEntries() }

    private func fdbEntries() -> [FDBEntry] {
        ports.values.sorted { $0.id < $1.id }.compactMap { p in
            guard let mac = p.nic?.assignedMAC ?? p.mac else { return nil }
            return FDBEntry(mac: mac, vlan: p.vlan, portId: p.id, portName: p.name, ageSeconds: 0, isStatic: true)
        }
    }

    public func enableExtension(named name: String, position: Int?) async throws(SwitchError) {
        guard let d = availableExtensions().first(where: { $0.name == name }) else {
            throw SwitchError(.notFound, "unknown extension '\(name)'")
        }
        if enabledExtensions.contains(name) { throw SwitchError(.exists, "extension '\(name)' is already enabled") }
        // Into its class at `position` (default: the top), keeping the others' order.
        let band = enabledExtensions.filter { n in availableExtensions().first { $0.name == n }?.class == d.class }
        let p = min(max(position ?? 0, 0), band.count)
        if p < band.count, let at = enabledExtensions.firstIndex(of: band[p]) {
            enabledExtensions.insert(name, at: at)
        } else {
            enabledExtensions.append(name)
        }
    }

    public func disableExtension(named name: String) async throws(SwitchError) {
        guard enabledExtensions.contains(name) else { throw SwitchError(.notFound, "extension '\(name)' is not enabled") }
        enabledExtensions.removeAll { $0 == name }
    }

    public func setExtensionSettings(named name: String, _ settings: [String: String]) async throws(SwitchError) {
        guard availableExtensions().contains(where: { $0.name == name }) else { throw SwitchError(.notFound, "unknown extension '\(name)'") }
        if let entry = ExtensionRegistry.builtin.entry(named: name) { _ = try entry.make(ExtensionSettings(settings)) }
    }

    public func extensions() async -> [ExtensionInfo] {
        var positions: [ExtensionClass: Int] = [:]
        var enabled: [String: Int] = [:]
        for name in enabledExtensions {
            guard let d = availableExtensions().first(where: { $0.name == name }) else { continue }
            enabled[name] = positions[d.class, default: 0]
            positions[d.class, default: 0] += 1
        }
        return availableExtensions().map { d in
            ExtensionInfo(name: d.name, extensionClass: d.class, enabled: enabled[d.name] != nil, position: enabled[d.name], summary: d.summary)
        }
    }

    public func subscribeEvents() async -> EventSubscription { hub.subscribe() }

    public func startHeartbeat(_ heartbeat: Heartbeat) async {
        heartbeatTimer?.cancel()
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "tapswitch.inmemory.heartbeat"))
        timer.schedule(deadline: .now(), repeating: .nanoseconds(Int(Heartbeat.nanos(heartbeat.interval))))
        timer.setEventHandler { @Sendable in heartbeat.beat() }
        timer.resume()
        heartbeatTimer = timer
    }

    public func shutdown() async {
        heartbeatTimer?.cancel()
        heartbeatTimer = nil
        hub.finish()
    }

    // MARK: - Helpers

    private func port(named name: String) -> PortInfo? { ports.values.first { $0.name == name } }

    private struct Veto {
        var extensionName: String
        var reason: String
    }

    private func vetoNIC(mac: MACAddress, portId: PortID) -> Veto? {
        guard enabledExtensions.contains("duplicate-mac-guard") else { return nil }
        if let other = ports.values.first(where: { $0.id != portId && ($0.nic?.assignedMAC == mac || $0.mac == mac) }) {
            return Veto(extensionName: "duplicate-mac-guard", reason: "MAC \(mac) is already in use on port '\(other.name)'")
        }
        return nil
    }

    /// A locally administered unicast address (52:54:00 is QEMU's prefix) not used by any port.
    private func generateMAC() -> MACAddress {
        while true {
            let mac = MACAddress(rawValue: 0x52_54_00_00_00_00 | UInt64.random(in: 1...0xFF_FFFF))
            if !ports.values.contains(where: { $0.nic?.assignedMAC == mac || $0.mac == mac }) { return mac }
        }
    }
}
