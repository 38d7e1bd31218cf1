import DataPlane
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing
import Locking

/// Lifecycle events recorded from the runtime's queue, readable from the test.
final class EventLog: Sendable {
    private let events = Locked<[LifecycleEvent]>([])

    func append(_ e: LifecycleEvent) { events.withLock { $0.append(e) } }

    /// Event kinds for a port name, in order.
    func kinds(_ port: String) -> [String] {
        events.withLock { $0.filter { $0.port.name == port }.map(\.kind.rawValue) }
    }

    func waitFor(_ kind: LifecycleEvent.Kind, port: String, count: Int = 1, timeout: Duration = .seconds(5)) throws {
        try waitUntil("\(kind.rawValue) x\(count) for \(port)", timeout: timeout) {
            kinds(port).filter { $0 == kind.rawValue }.count >= count
        }
    }
}

/// Runs `body` with a started runtime; always shuts it down and removes what the test registered.
func withRuntime(unknownUnicast: UnknownUnicastPolicy = .flood,
                 _ body: (SwitchRuntime, EventLog, Cleanup) async throws -> Void) async throws {
    try Privilege.requireNetAdmin()
    ignoreSIGPIPE()
    let cleanup = Cleanup()
    let rt = try SwitchRuntime(configuration: SwitchConfiguration(name: "test", maxPorts: 64, batchCapacity: 64,
                                                                  unknownUnicast: unknownUnicast))
    let log = EventLog()
    rt.addEventHandler { log.append($0) }
    try rt.start()
    do {
        try await body(rt, log, cleanup)
    } catch {
        await rt.shutdown()
        cleanup.run()
        throw error
    }
    await rt.shutdown()
    cleanup.run()
}

func mac(_ last: UInt8) -> MACAddress { MACAddress(0x52, 0x54, 0x00, 0x12, 0x00, last) }

extension SwitchRuntime {
    /// Starts a VM NIC on a fresh TAP and registers its deletion.
    func startTestVM(_ tap: String, mac: MACAddress, vlan: VLANID? = nil, cleanup: Cleanup) async throws {
        cleanup.deleteLink(tap)
        try await startVMNIC(VMNICSpec(vmName: "vm-" + tap, tap: tap, mac: mac, vlan: vlan))
    }

    func counters(_ name: String) async -> PortCounters? {
        await snapshot().ports.first { $0.port.name == name }?.counters
    }

    func waitForFramesIn(_ name: String, atLeast n: UInt64) async throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(5))
        while ContinuousClock.now < deadline {
            if let c = await counters(name), c.framesIn >= n { return }
            try await Task.sleep(for: .milliseconds(5))  // poll interval of a deadline poll
        }
        throw SwitchError(.system, "timed out waiting for \(n) frames in on \(name)")
    }
}

/// Reads /sys/class/net/NAME/statistics/FIELD.
func linkStat(_ name: String, _ field: String) -> UInt64 {
    let text = (try? String(contentsOfFile: "/sys/class/net/\(name)/statistics/\(field)", encoding: .utf8)) ?? "0"
    return UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
}
