import DataPlane
import FakeDevices
import Foundation
import SwitchCore
import SwitchExtensions
import SwitchService
import TapswitchDaemon

// `tapswitchd-fake`: tapswitchd exactly (command line, config, control socket, state, the real
// backend over the real switch and packet loop) on in-memory devices, so unprivileged tests drive
// the whole daemon without root, TAPs or netlink. Test-only: it is not a product.
//
// TAPSWITCH_FAKE_UPLINKS (comma-separated names) are netdevs that exist for `port add-external`.
//
// It also offers `nic-memo`, a test extension with per-NIC state: it counts the NIC_CREATEs each
// port name has seen, saves the count (NIC save) and adds a restored one back (NIC restore), and
// shows it as the counter `creates:PORT`. Without save/restore a restart starts it from 1 again.
final class NICMemo: SwitchExtension {
    let name = "nic-memo"
    let extensionClass = ExtensionClass.filtering
    var creates: [String: UInt64] = [:]

    func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        if request.kind == .nicCreate { creates[request.port.name, default: 0] += 1 }
        return .accept
    }

    func saveNIC(port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> SavedNICState? {
        guard let n = creates[port.name] else { return nil }
        return SavedNICState(extensionName: name, version: 1, data: withUnsafeBytes(of: n.littleEndian) { Array($0) })
    }

    func restoreNIC(_ state: SavedNICState, port: PortParameters, nic: NICParameters, switch sw: VirtualSwitch) -> Bool {
        guard state.version == 1, state.data.count == 8 else { return false }
        let saved = state.data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        creates[port.name, default: 0] += saved
        return true
    }

    var counters: [ExtensionCounter] { creates.sorted { $0.key < $1.key }.map { ExtensionCounter("creates:\($0.key)", $0.value) } }
}

let devices = FakeDeviceLayer()
for (i, name) in (ProcessInfo.processInfo.environment["TAPSWITCH_FAKE_UPLINKS"] ?? "").split(separator: ",").enumerated() {
    devices.addUplink(String(name), mac: [0x02, 0xfe, 0, 0, 0, UInt8(truncatingIfNeeded: i + 1)])
}
var registry = ExtensionRegistry.builtin
try! registry.register(ExtensionRegistry.Entry(name: "nic-memo", extensionClass: .filtering,
                                               summary: "test: counts NIC_CREATEs per port across restarts (NIC save/restore)") { (s: ExtensionSettings) throws(SwitchError) in
    try s.check(extension: "nic-memo", known: [])
    return NICMemo()
})
let factories = registry.entries.map {
    DataPlaneBackend.ExtensionFactory(name: $0.name, extensionClass: $0.extensionClass, summary: $0.summary, make: $0.make)
}
await TapswitchD.start(registry: registry) { DataPlaneBackend(devices: devices, kind: "dataplane on fake devices", extensions: factories) }
