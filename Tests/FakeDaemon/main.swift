import DataPlane
import FakeDevices
import Foundation
import SwitchService
import TapswitchDaemon

// `tapswitchd-fake`: tapswitchd exactly (command line, config, control socket, state, the real
// backend over the real switch and packet loop) on in-memory devices, so unprivileged tests drive
// the whole daemon without root, TAPs or netlink. Test-only: it is not a product.
//
// TAPSWITCH_FAKE_UPLINKS (comma-separated names) are netdevs that exist for `port add-external`.
let devices = FakeDeviceLayer()
for (i, name) in (ProcessInfo.processInfo.environment["TAPSWITCH_FAKE_UPLINKS"] ?? "").split(separator: ",").enumerated() {
    devices.addUplink(String(name), mac: [0x02, 0xfe, 0, 0, 0, UInt8(truncatingIfNeeded: i + 1)])
}
await TapswitchD.start { DataPlaneBackend(devices: devices, kind: "dataplane on fake devices") }
