import ControlProtocol
import ControlServer
import FakeDevices
import Foundation
import Logging
import StateStore
import SwitchCore
@testable import SwitchService
import Testing
import TestSupport
import Locking

/// Takes a NIC reference when the NIC of a port named in `targets` connects, and keeps it until the
/// test releases it: an extension that holds up a removal.
final class NICHolder: SwitchExtension, @unchecked Sendable {
    let name = "nic-holder"
    let extensionClass = SwitchCore.ExtensionClass.filtering
    let targets: Set<String>

    init(targets: Set<String>) { self.targets = targets }

    func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch) {
        guard request.kind == .nicConnect, outcome == .completed, targets.contains(request.port.name) else { return }
        // Inside the callback: the core books the reference to this extension.
        try? sw.referenceNIC(on: request.port.id)
    }
}

/// The control plane never waits for a held NIC: the daemon's backend, switch and packet loop on
/// in-memory devices, driven through the control socket in-process (no root needed).
@Suite("Held NIC")
struct HeldNICTests {
    @Test("a held NIC reference: vm stop answers 'removal pending', another VM starts meanwhile, the holder is reported, and the removal completes when released")
    func heldReference() async throws {
        let tapA = "held0", tapB = "free0"
        let devices = FakeDeviceLayer()
        let dir = try TempDir("tswheld")
        defer { dir.remove() }

        let holder = DataPlaneBackend.ExtensionFactory(name: "nic-holder", extensionClass: .filtering, summary: "test: holds NICs") {
            NICHolder(targets: [tapA])
        }
        let backend = DataPlaneBackend(devices: devices, extensions: DataPlaneBackend.shippedExtensions + [holder])
        try await backend.configure(SwitchSettings(name: "held"), extensions: ["nic-holder"])
        await backend.setNICHoldReport(seconds: 0.2)
        let service = ControlService(backend: backend, store: StateStore(directory: dir.file("state")), records: StateRecords(),
                                     logger: Logger(label: "test"))
        let server = try ControlServer(options: .init(path: dir.file("control.sock")), service: service, logger: Logger(label: "test"))
        let path = server.options.path
        let events = await backend.subscribeEvents()
        let seen = Locked<[SwitchEvent]>([])
        let collector = Task { for await e in events.live { seen.withLock { $0.append(e) } } }
        defer {
            events.cancel()
            collector.cancel()
        }
        func call(_ r: ControlRequest) async throws -> ControlResponse {
            try await offPool { try ControlConnection.roundTrip(r, path: path, timeout: 10) }
        }

        let start = try await call(.vmStart(VMSpec(name: "held", nics: [NICSpec(tap: tapA, mac: MACAddress(rawValue: 0x5254_00d1_0001))])))
        #expect(start.ok, "\(start.error ?? "")")
        // QEMU attaches: NIC_CONNECT, and the extension takes its reference.
        devices.attach(tapA)
        try await offPool {
            try waitUntil("NIC of \(tapA) connected", timeout: .seconds(10)) {
                seen.withLock { $0.contains { $0.kind == .nicConnect && $0.portName == tapA } }
            }
        }

        // The answer comes once NIC_DISCONNECT is done, not when the reference drains.
        let stop = try await call(.vmStop(name: "held", force: true))  // the guest is still attached
        #expect(stop.ok, "\(stop.error ?? "")")
        #expect(stop.pending == [tapA])
        #expect(seen.withLock { $0.contains { $0.kind == .nicDisconnect && $0.portName == tapA } })
        #expect(!seen.withLock { $0.contains { $0.kind == .portDelete && $0.portName == tapA } })

        // Other requests proceed meanwhile.
        let other = try await call(.vmStart(VMSpec(name: "free", nics: [NICSpec(tap: tapB, mac: MACAddress(rawValue: 0x5254_00d1_0002))])))
        #expect(other.ok, "\(other.error ?? "")")
        #expect(try await call(.show).snapshot?.ports.contains { $0.name == tapB } == true)
        // The held TAP's name cannot be reused until the removal is done.
        let reuse = try await call(.vmStart(VMSpec(name: "again", nics: [NICSpec(tap: tapA)])))
        #expect(!reuse.ok)
        #expect(reuse.error?.contains("still being removed") == true, "\(reuse.error ?? "")")

        // Reported, naming the holder.
        try await offPool {
            try waitUntil("nic-held event for \(tapA)", timeout: .seconds(10)) {
                seen.withLock { $0.contains { $0.kind == .nicHeld && $0.portName == tapA } }
            }
        }
        let report = seen.withLock { $0.first { $0.kind == .nicHeld && $0.portName == tapA } }
        #expect(report?.detail?.contains("nic-holder (1 NIC reference)") == true, "\(report?.detail ?? "")")
        #expect(report?.vmName == "held")
        #expect(devices.device(tapA) != nil, "the TAP stays while the removal is pending")

        // The holder lets go: NIC_DELETE ... PORT_DELETE follow by themselves, then the TAP goes.
        let released = await backend.withSwitch { sw -> Bool in
            guard let port = sw.port(named: tapA) else { return false }
            return (try? sw.dereferenceNIC(on: port.id, holder: "nic-holder")) != nil
        }
        #expect(released == true)
        try await offPool {
            try waitUntil("port-delete of \(tapA)", timeout: .seconds(10)) {
                seen.withLock { $0.contains { $0.kind == .portDelete && $0.portName == tapA } }
            }
            try waitUntil("TAP \(tapA) deleted", timeout: .seconds(10)) { devices.device(tapA) == nil }
        }
        let order = seen.withLock { $0.filter { $0.portName == tapA }.map(\.kind) }
        #expect(order.suffix(3) == [.nicDelete, .portTeardown, .portDelete], "\(order)")

        let stopB = try await call(.vmStop(name: "free"))
        #expect(stopB.ok && stopB.pending == nil, "\(stopB.error ?? "")")
        server.stop()
        await backend.shutdown()
    }
}
