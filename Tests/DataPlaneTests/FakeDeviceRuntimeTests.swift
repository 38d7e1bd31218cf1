import DataPlane
import FakeDevices
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing
import Locking

/// The real runtime (packet loop, switch, lifecycle) over in-memory devices: no root needed.
@Suite("SwitchRuntime over FakeDevices (unprivileged)")
struct FakeDeviceRuntimeTests {
    /// Runs `body` with a started runtime over fresh fake devices; always shuts it down.
    func withFakeRuntime(_ body: (SwitchRuntime, FakeDeviceLayer, EventLog) async throws -> Void) async throws {
        let devices = FakeDeviceLayer()
        let rt = try SwitchRuntime(configuration: SwitchConfiguration(name: "fake", maxPorts: 16, batchCapacity: 16), devices: devices)
        let log = EventLog()
        rt.addEventHandler { log.append($0) }
        try rt.start()
        do {
            try await body(rt, devices, log)
        } catch {
            await rt.shutdown()
            throw error
        }
        await rt.shutdown()
        #expect(devices.openDriverCount == 0, "shutdown closes every driver")
    }

    func frames(_ devices: FakeDeviceLayer, to name: String, count: Int) throws -> [FakeFrame] {
        try waitUntil("\(count) frame(s) delivered to \(name)", timeout: .seconds(5)) { devices.delivered(to: name).count >= count }
        return devices.delivered(to: name)
    }

    @Test("two VM NICs: start, connect on carrier, forward both ways, stop deletes the TAPs")
    func twoVMs() async throws {
        try await withFakeRuntime { rt, devices, log in
            try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "fk-a", mac: mac(0xA1), owner: 1000, group: 1000))
            try await rt.startVMNIC(VMNICSpec(vmName: "b", tap: "fk-b", mac: mac(0xB1)))
            let a = try #require(devices.device("fk-a"))
            #expect(a.kind == .tap && a.isUp && !a.hasCarrier && a.owner == 1000 && a.group == 1000 && a.driverOpen)
            #expect(a.mac == mac(0xA1).bytes)
            #expect(log.kinds("fk-a").contains("nic-create") && !log.kinds("fk-a").contains("nic-connect"))

            devices.attach("fk-a")
            devices.attach("fk-b")
            try log.waitFor(.nicConnect, port: "fk-a")
            try log.waitFor(.nicConnect, port: "fk-b")

            let hello = TestFrames.broadcast(src: mac(0xA1).bytes, payload: Array(repeating: 1, count: 46))
            #expect(devices.inject(hello, from: "fk-a"))
            #expect(try frames(devices, to: "fk-b", count: 1) == [FakeFrame(hello)])
            let reply = TestFrames.ethernet(dst: mac(0xA1).bytes, src: mac(0xB1).bytes, etherType: 0x88B5,
                                            payload: Array(repeating: 2, count: 46))
            let header = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, checksumStart: 34, checksumOffset: 6)
            #expect(devices.inject(reply, vnetHeader: header, from: "fk-b"))
            #expect(try frames(devices, to: "fk-a", count: 1) == [FakeFrame(reply, vnetHeader: header)])
            #expect(devices.delivered(to: "fk-b").count == 1, "the broadcast was not echoed to its source")

            let counters = try #require(await rt.snapshot().ports.first { $0.port.name == "fk-a" }?.counters)
            #expect(counters.framesIn == 1 && counters.framesOut == 1)

            try await rt.removePort(named: "fk-a")
            try await rt.removePort(named: "fk-b")
            #expect(devices.deviceNames.isEmpty)
            #expect(devices.openDriverCount == 0)
            #expect(log.kinds("fk-a").last == "port-delete")
        }
    }

    @Test("frames that arrive before the carrier notification connect the NIC and are forwarded")
    func framesBeforeNotification() async throws {
        try await withFakeRuntime { rt, devices, log in
            try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "fk-a", mac: mac(0xA1)))
            try await rt.startVMNIC(VMNICSpec(vmName: "b", tap: "fk-b", mac: mac(0xB1)))
            devices.attach("fk-b")
            try log.waitFor(.nicConnect, port: "fk-b")
            // QEMU attached, but linkwatch has not reported it yet: the loop asks its own link query.
            devices.attach("fk-a", announce: false)
            let first = TestFrames.broadcast(src: mac(0xA1).bytes, payload: Array(repeating: 7, count: 46))
            #expect(devices.inject(first, from: "fk-a"))
            #expect(try frames(devices, to: "fk-b", count: 1) == [FakeFrame(first)])
            #expect(log.kinds("fk-a").contains("nic-connect"))
        }
    }

    @Test("a TAP deleted by hand drives the stop sequence and reports the port lost; the other port keeps forwarding")
    func deletedByHand() async throws {
        try await withFakeRuntime { rt, devices, log in
            let lost = Locked<[String]>([])
            rt.setPortLostHandler { name in lost.withLock { $0.append(name) } }
            for (tap, m) in [("fk-a", mac(0xA1)), ("fk-b", mac(0xB1)), ("fk-c", mac(0xC1))] {
                try await rt.startVMNIC(VMNICSpec(vmName: tap, tap: tap, mac: m))
                devices.attach(tap)
                try log.waitFor(.nicConnect, port: tap)
            }
            devices.deleteByHand("fk-c")
            try log.waitFor(.portDelete, port: "fk-c")
            try waitUntil("port-lost report", timeout: .seconds(5)) { lost.withLock { $0 } == ["fk-c"] }
            #expect(await rt.snapshot().ports.map(\.port.name).sorted() == ["fk-a", "fk-b"])
            let frame = TestFrames.broadcast(src: mac(0xA1).bytes, payload: Array(repeating: 3, count: 46))
            #expect(devices.inject(frame, from: "fk-a"))
            #expect(try frames(devices, to: "fk-b", count: 1) == [FakeFrame(frame)])
        }
    }

    @Test("a device step that fails leaves nothing behind: no TAP, no open driver, no port")
    func failuresLeaveNothing() async throws {
        try await withFakeRuntime { rt, devices, _ in
            devices.failNext(.configureVMTAP, on: "fk-a")
            await #expect(throws: SwitchError.self) { try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "fk-a", mac: mac(0xA1))) }
            devices.failNext(.openDriver, on: "fk-b")
            await #expect(throws: SwitchError.self) { try await rt.startVMNIC(VMNICSpec(vmName: "b", tap: "fk-b", mac: mac(0xB1))) }
            devices.failNext(.createInternalPort, on: "fk-i")
            await #expect(throws: SwitchError.self) { try await rt.addInternalPort(name: "fk-i", mac: mac(0xC1)) }
            #expect(devices.deviceNames.isEmpty)
            #expect(devices.openDriverCount == 0)
            #expect(await rt.snapshot().ports.isEmpty)
            // And the names are free again.
            try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "fk-a", mac: mac(0xA1)))
            try await rt.addInternalPort(name: "fk-i", mac: mac(0xC1))
            #expect(devices.deviceNames == ["fk-a", "fk-i"])
        }
    }

    @Test("an internal port is connected at once, carries frames both ways, and its TAP goes with the port")
    func internalPort() async throws {
        try await withFakeRuntime { rt, devices, log in
            try await rt.addInternalPort(name: "fk-i", mac: mac(0x11))
            try await rt.startVMNIC(VMNICSpec(vmName: "a", tap: "fk-a", mac: mac(0xA1)))
            devices.attach("fk-a")
            try log.waitFor(.nicConnect, port: "fk-a")
            #expect(log.kinds("fk-i").contains("nic-connect"))
            let frame = TestFrames.broadcast(src: mac(0x11).bytes, payload: Array(repeating: 5, count: 46))
            #expect(devices.inject(frame, from: "fk-i"))
            #expect(try frames(devices, to: "fk-a", count: 1) == [FakeFrame(frame)])
            try await rt.removePort(named: "fk-i")
            #expect(devices.device("fk-i") == nil, "closing the driver destroyed the non-persistent TAP")
        }
    }
}
