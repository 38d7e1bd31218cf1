import ControlProtocol
import FakeDevices
import Foundation
import Testing
@testable import ServiceSupport
@testable import StateStore
@testable import SwitchService
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

@Suite("State store")
struct StateStoreTests {
    @Test("save then load returns the same records; no temp file is left")
    func roundTrip() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let store = StateStore(directory: dir.path + "/state")
        #expect(try store.load() == StateRecords(), "no file yet means nothing recorded")
        let records = StateRecords(
            vms: [VMSpec(name: "web1", nics: [NICSpec(tap: "web1-0", mac: MACAddress("52:54:00:12:34:56"), owner: "qemu", mtu: 1500, vlan: 10)])],
            internalPorts: [InternalPortSpec(name: "h0", netns: "ns")], externalPorts: [ExternalPortSpec(device: "eth9")])
        try store.save(records)
        try store.save(records)
        #expect(try store.load() == records)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/state")
        #expect(files == ["state.json"])
        var st = stat()
        #expect(stat(dir.path + "/state/state.json", &st) == 0 && st.st_mode & 0o777 == 0o600)
    }

    @Test("a damaged state file is an error naming the file, not silently empty")
    func damaged() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        _ = try dir.write("state.json", #"{"version": 1, "records": {"vms": [{"name": "a", "nics": [{"tap": "t", "mtu": 1}]}], "internalPorts": [], "externalPorts": []}}"#)
        do {
            _ = try StateStore(directory: dir.path).load()
            Issue.record("damaged state accepted")
        } catch {
            #expect(error.message.contains(dir.path + "/state.json"))
            #expect(error.message.contains("MTU 1 is out of range"))
        }
    }
}

@Suite("systemd notify")
struct SystemdNotifierTests {
    /// A datagram socket bound at `path` (or an abstract name when it starts with '@').
    func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        try #require(rc == 0, "bind \(path): \(String(cString: strerror(errno)))")
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func receive(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0)
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : "<nothing: \(String(cString: strerror(errno)))>"
    }

    @Test("READY, STATUS, STOPPING, RELOADING and WATCHDOG reach a path socket")
    func pathSocket() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("notify")
        let fd = try listen(path)
        defer { close(fd) }
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": path])
        n.ready(status: "2 VMs")
        #expect(receive(fd) == "READY=1\nSTATUS=2 VMs")
        n.stopping()
        #expect(receive(fd) == "STOPPING=1")
        n.reloading()
        let r = receive(fd)
        #expect(r.hasPrefix("RELOADING=1\nMONOTONIC_USEC="))
        #expect(UInt64(r.split(separator: "=").last ?? "") != nil)
        n.watchdog()
        #expect(receive(fd) == "WATCHDOG=1")
    }

    @Test("abstract socket names ('@...') work")
    func abstractSocket() throws {
        let name = "@tapswitch-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try listen(name)
        defer { close(fd) }
        SystemdNotifier(environment: ["NOTIFY_SOCKET": name]).status("hello")
        #expect(receive(fd) == "STATUS=hello")
    }

    @Test("without NOTIFY_SOCKET everything is a no-op")
    func disabled() {
        let n = SystemdNotifier(environment: [:])
        #expect(!n.isEnabled)
        #expect(n.notify("READY=1") == nil)
        #expect(n.makeHeartbeat() == nil)
    }

    @Test("watchdog interval honours WATCHDOG_USEC and WATCHDOG_PID")
    func watchdogInterval() {
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "10000000"], pid: 7) == .seconds(10))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"], pid: 7) == .seconds(10))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "8"], pid: 7) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "0"], pid: 7) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "x"], pid: 7) == nil)
    }

    @Test("heartbeat pings at most once per half watchdog period, however often the loop beats")
    func heartbeatRateLimit() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("notify")
        let fd = try listen(path)
        defer { close(fd) }
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"])
        let hb = try #require(n.makeHeartbeat())
        #expect(hb.interval == .seconds(15))
        for _ in 0..<10_000 { hb.beat() }
        #expect(hb.beatCount == 10_000)
        #expect(receive(fd) == "WATCHDOG=1")
        var buf = [UInt8](repeating: 0, count: 64)
        #expect(recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT)) < 0, "only one ping for 10000 beats within 30 s")
    }
}

/// The daemon's one backend (the real switch and packet loop) over in-memory devices: no root.
@Suite("Backend over fake devices")
struct FakeDeviceBackendTests {
    func configured(_ devices: FakeDeviceLayer = FakeDeviceLayer()) async throws -> DataPlaneBackend {
        let b = DataPlaneBackend(devices: devices)
        try await b.configure(SwitchSettings(), extensions: ["duplicate-mac-guard"])
        return b
    }

    @Test("VM start/stop runs the Hyper-V lifecycle in order; carrier connects the NIC; stop deletes the TAP")
    func lifecycle() async throws {
        let devices = FakeDeviceLayer()
        let b = try await configured(devices)
        let sub = await b.subscribeEvents()
        defer { sub.cancel() }
        let ports = try await b.startVM(VMSpec(name: "vm1", nics: [NICSpec(tap: "vm1-0")]))
        #expect(ports.count == 1 && ports[0].nic?.assignedMAC.description.hasPrefix("52:54:00:") == true)
        #expect(devices.device("vm1-0")?.kind == .tap)
        devices.attach("vm1-0")  // QEMU attaches
        var connected = false
        for _ in 0..<500 where !connected {
            connected = await b.snapshot().ports.first?.nic?.state == .connected
            if !connected { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(connected)
        // The guest still holds the TAP: only a forced stop goes ahead.
        #expect(try await b.stopVM(named: "vm1", force: true) == [])
        #expect(await b.snapshot().ports.isEmpty)
        #expect(devices.device("vm1-0") == nil, "the TAP is deleted")
        let kinds = await b.subscribeEvents().history.map(\.kind)
        #expect(kinds == [.portCreate, .nicCreate, .nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        var seen: [EventKind] = []
        for await e in sub.live {
            seen.append(e.kind)
            if e.kind == .portDelete { break }
        }
        #expect(seen == kinds, "the live stream carries the same events in the same order")
        await b.shutdown()
    }

    @Test("a veto leaves nothing behind and names the extension")
    func veto() async throws {
        let devices = FakeDeviceLayer()
        let b = try await configured(devices)
        let mac = try #require(MACAddress("52:54:00:00:00:01"))
        _ = try await b.startVM(VMSpec(name: "a", nics: [NICSpec(tap: "a0", mac: mac)]))
        await #expect(throws: SwitchError.self) {
            try await b.startVM(VMSpec(name: "b", nics: [NICSpec(tap: "b0"), NICSpec(tap: "b1", mac: mac)]))
        }
        #expect(await b.snapshot().ports.map(\.name) == ["a0"])
        #expect(devices.deviceNames == ["a0"], "the rolled-back VM's TAPs are gone")
        let vetoes = await b.subscribeEvents().history.filter { $0.kind == .veto }
        #expect(vetoes.count == 1 && vetoes.first?.detail?.hasPrefix("duplicate-mac-guard: ") == true)
        await b.shutdown()
    }

    @Test("adoption replays a VM's events with restore: true, recreating its missing TAP, and creates internal ports anew")
    func adopt() async throws {
        let devices = FakeDeviceLayer()
        let b = try await configured(devices)
        let records = StateRecords(vms: [VMSpec(name: "a", nics: [NICSpec(tap: "a0", mac: MACAddress("52:54:00:00:00:02"))])],
                                   internalPorts: [InternalPortSpec(name: "h0")])
        let outcome = await b.adopt(records)
        #expect(outcome.failures.isEmpty && outcome.adopted == records)
        let history = await b.subscribeEvents().history
        // The VM's port is taken over (restore); the internal port died with the old daemon's fd
        // and is created anew.
        let vm = history.filter { $0.portName == "a0" }
        #expect(vm.map(\.kind) == [.portCreate, .nicCreate] && vm.allSatisfy(\.restore))
        #expect(history.filter { $0.portName == "h0" }.map(\.kind) == [.portCreate, .nicCreate, .nicConnect])
        #expect(Set(devices.deviceNames) == ["a0", "h0"])
        await b.shutdown()
    }

    @Test("every shipped extension can be enabled; unknown extensions are rejected naming what is available")
    func extensions() async throws {
        let b = DataPlaneBackend(devices: FakeDeviceLayer())
        let all = b.availableExtensions().map(\.name)
        #expect(all.contains("duplicate-mac-guard") && all.count > 1)
        try await b.configure(SwitchSettings(), extensions: all)
        #expect(await b.extensions().allSatisfy(\.enabled))
        await b.shutdown()
        let other = DataPlaneBackend(devices: FakeDeviceLayer())
        await #expect(throws: SwitchError.self) { try await other.configure(SwitchSettings(), extensions: ["nope"]) }
        await other.shutdown()
    }
}

@Suite("Shutdown deadline")
struct ShutdownDeadlineTests {
    @Test("fires when not disarmed in time, stays quiet when disarmed")
    func deadline() async throws {
        let fired = Counter()
        _ = ShutdownDeadline(seconds: 0.05) { fired.add() }
        #expect(try await waitUntil(5) { fired.value == 1 })

        let quiet = Counter()
        let d = ShutdownDeadline(seconds: 0.05) { quiet.add() }
        d.disarm()
        // The same kind of wait that saw the first one fire.
        #expect(try await !waitUntil(0.3) { quiet.value > 0 })
    }
}
