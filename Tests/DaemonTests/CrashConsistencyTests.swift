import ControlProtocol
import Foundation
import LinuxNet
import StateStore
import SwitchService
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Issue 12, finding 4 and item 2: a daemon killed at any step of `vm start` or `vm stop` leaves no
/// debris. The daemon's crash points (`TAPSWITCH_CRASH_POINT_FILE`, see `CrashPoint`) make it
/// SIGKILL itself exactly there; the restarted daemon must complete or undo the step from its
/// intent record and the TAPs' markers.
@Suite("Crash consistency on real TAPs (issue 12 finding 4)", .serialized, .heavy)
struct CrashConsistencyTests {
    static let macA = "52:54:00:c4:00:01"
    static let macB = "52:54:00:c4:00:02"

    /// Every crash point, and whether the VM is running after the restart (the step completed) or
    /// not (undone).
    static let startPoints: [(String, Bool)] = [("vm-start:intent", false), ("vm-start:tap-created", false),
                                                ("vm-start:nic-plugged", false), ("vm-start:recorded", true)]
    static let stopPoints: [(String, Bool)] = [("vm-stop:intent", true), ("vm-stop:recorded", false),
                                               ("vm-stop:tap-deleted", false), ("vm-stop:done", false)]

    func stateRecords(_ d: DaemonUnderTest) throws -> StateRecords { try StateStore(directory: d.stateDir).load() }

    /// The records, the switch and the kernel agree on the VM `cr` and its two TAPs; returns whether it runs.
    func checkAgreement(_ d: DaemonUnderTest, taps: [String], _ point: String) async throws -> Bool {
        let recorded = try stateRecords(d).vm(named: "cr")
        let ports = try await d.show().ports.map(\.name)
        var inKernel: [Bool] = []
        for t in taps { inKernel.append(try await linkExists(t)) }
        let running = recorded != nil
        #expect(recorded.map { $0.nics.map(\.tap) } ?? [] == (running ? taps : []), "\(point): recorded NICs\n\(d.log)")
        #expect(taps.allSatisfy { ports.contains($0) } == running && taps.allSatisfy { !ports.contains($0) } == !running,
                "\(point): switch ports \(ports), recorded: \(running)\n\(d.log)")
        #expect(inKernel == taps.map { _ in running }, "\(point): TAPs in the kernel \(inKernel), recorded: \(running)\n\(d.log)")
        #expect(!FileManager.default.fileExists(atPath: d.stateDir + "/intent.json"), "\(point): intent record left behind")
        return running
    }

    @Test("finding 4: SIGKILL at every step of vm start and vm stop, then a restart: no orphan TAP, state matches the kernel, vm start works")
    func finding4_sigkillAtEveryStepLeavesNoDebris() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let taps = [names.name("cra"), names.name("crb")]
        for t in taps { cleanup.deleteLink(t) }
        let probe = try TempDir("tswcrash")
        cleanup.add("remove \(probe.path)") { probe.remove() }
        let crashFile = probe.file("crash-point")
        let d = try DaemonUnderTest(config: .shipped, environment: ["TAPSWITCH_CRASH_POINT_FILE": crashFile], cleanup: cleanup)
        try await d.start()
        let start = ["vm", "start", "cr", "--nic", taps[0], "--mac", Self.macA, "--vlan", "10", "--nic", taps[1], "--mac", Self.macB, "--vlan", "10"]

        for (point, runsAfter) in Self.startPoints + Self.stopPoints {
            let isStop = point.hasPrefix("vm-stop")
            if isStop {
                let r = try await d.ctl(start)
                try #require(r.status == 0, "\(point): vm start before the stop: \(r.stderr)")
            }
            try point.write(toFile: crashFile, atomically: true, encoding: .utf8)
            let cut = try await d.ctl(isStop ? ["vm", "stop", "cr"] : start)
            #expect(cut.status != 0, "\(point): the request should have been cut off by the crash")
            #expect(try await waitUntil(10) { !d.isRunning }, "\(point): the daemon did not die at its crash point\n\(d.log)")
            #expect(!FileManager.default.fileExists(atPath: crashFile), "\(point) was never reached")

            try await d.start()
            let running = try await checkAgreement(d, taps: taps, point)
            #expect(running == runsAfter, "\(point): expected the step to be \(runsAfter == isStop ? "undone" : "completed")\n\(d.log)")
            if running {
                // A re-adopted VM is whole: its marker is on every TAP.
                for t in taps {
                    let alias = try RouteNetlink().link(named: t)?.alias ?? ""
                    #expect(alias.hasPrefix("tapswitch:") && alias.contains("vm=cr") && alias.contains("vlan=10"), "\(point): alias '\(alias)'")
                }
                let stop = try await d.ctl("vm", "stop", "cr")
                try #require(stop.status == 0, "\(point): vm stop after the restart: \(stop.stderr)")
            }
            // vm start of the same VM works again, and a normal stop removes everything.
            let again = try await d.ctl(start)
            #expect(again.status == 0, "\(point): vm start after the restart: \(again.stderr)\n\(d.log)")
            let stop = try await d.ctl("vm", "stop", "cr")
            #expect(stop.status == 0, "\(point): vm stop: \(stop.stderr)")
            for t in taps { #expect(try await waitUntil { try !linkExistsSync(t) }, "\(point): \(t) left behind") }
        }
        #expect(d.logText.contains("crash recovery: vm start of 'cr' was interrupted before it was recorded: undone"), "\(d.log)")
        #expect(d.logText.contains("crash recovery: vm stop of 'cr' was interrupted after it was recorded: completed"), "\(d.log)")
    }

    @Test("finding 4: a damaged state.json is set aside; the marked TAPs are adopted with their settings, one being removed is deleted")
    func finding4_damagedStateAdoptsMarkedTAPs() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let (kept, removing, foreign) = (names.name("crk"), names.name("crr"), names.name("crf"))
        for t in [kept, removing, foreign] { cleanup.deleteLink(t) }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        #expect(try await d.ctl("vm", "start", "keep", "--nic", kept, "--mac", Self.macA, "--vlan", "20", "--owner", "65534").status == 0)
        #expect(try await d.ctl("vm", "start", "gone", "--nic", removing, "--mac", Self.macB).status == 0)
        // A TAP of the same kind that is not this switch's: never touched.
        try TapDevice.createPersistent(name: InterfaceName(foreign), owner: nil, group: nil)
        try await d.sigkill()
        // As if `vm stop gone` had been recorded and its deletion interrupted.
        let alias = try #require(try RouteNetlink().link(named: removing)?.alias)
        try RouteNetlink().setAlias(removing, alias + " removing")
        try "{\"version\": 1, \"rec".write(toFile: d.stateDir + "/state.json", atomically: true, encoding: .utf8)

        try await d.start()
        let files = try FileManager.default.contentsOfDirectory(atPath: d.stateDir)
        #expect(files.contains { $0.hasPrefix("state.json.corrupt-") }, "\(files)")
        #expect(d.logText.contains("crash recovery: adopted TAP \(kept) as NIC 0 of VM 'keep' from its marker"), "\(d.log)")
        #expect(d.logText.contains("crash recovery: deleted TAP \(removing)"), "\(d.log)")
        let port = try #require(try await d.port(named: kept), "\(d.log)")
        #expect(port.vlanPolicy == .access(20) && port.nic?.assignedMAC.description == Self.macA && port.nic?.vmName == "keep")
        #expect(try stateRecords(d).vm(named: "keep")?.nics.first?.owner == "65534")
        #expect(try await !linkExists(removing))
        #expect(try await linkExists(foreign))
        #expect(try await d.port(named: foreign) == nil)
        // The adopted VM is managed again: vm stop removes it.
        #expect(try await d.ctl("vm", "stop", "keep").status == 0)
        #expect(try await waitUntil { try !linkExistsSync(kept) })
    }
}

func linkExistsSync(_ name: String) throws -> Bool { try RouteNetlink().link(named: name) != nil }

/// The pieces of crash recovery that need no devices: the TAP marker's text and the intent record.
@Suite("Crash recovery records (issue 12 finding 4)")
struct CrashRecoveryRecordTests {
    @Test("finding 4: a TAP marker reads back as written; another switch's marker is not ours; settings that do not fit are marked unknown")
    func finding4_markerRoundTrip() {
        let m = TapMarker(switchID: "00112233aabbccdd", vm: "web1", nic: 1, type: .emulated, settings: ["vlan=10", "isolated=on"])
        #expect(m.text == "tapswitch:00112233aabbccdd vm=web1 nic=1 type=emulated vlan=10 isolated=on")
        #expect(TapMarker(parsing: m.text, switchID: "00112233aabbccdd") == m)
        #expect(TapMarker(parsing: m.text, switchID: "ffffffffffffffff") == nil)
        #expect(TapMarker(parsing: "something else", switchID: "00112233aabbccdd") == nil)
        var removing = m
        removing.removing = true
        #expect(TapMarker(parsing: removing.text, switchID: "00112233aabbccdd")?.removing == true)
        let long = TapMarker(switchID: "00112233aabbccdd", vm: "v", nic: 0, type: .synthetic,
                             settings: ["allowed-vlans=" + (1...100).map(String.init).joined(separator: ",")])
        #expect(long.text == "tapswitch:00112233aabbccdd vm=v nic=0 settings=unknown")
        #expect(TapMarker(parsing: long.text, switchID: "00112233aabbccdd")?.settings == nil)
    }

    @Test("finding 4: the intent record is written, read back and cleared; a damaged one is set aside; the switch id is stable")
    func finding4_intentRecord() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let store = StateStore(directory: dir.path)
        #expect(try store.loadIntent().intent == nil)
        let intent = Intent(.vmStart, vm: "a", taps: ["t0", "t1"])
        try store.recordIntent(intent)
        #expect(try store.loadIntent().intent == intent)
        try store.clearIntent()
        #expect(!FileManager.default.fileExists(atPath: store.intentPath))
        try store.clearIntent()  // idempotent
        _ = try dir.write("intent.json", "{\"operation\": \"vm-st")
        let damaged = try store.loadIntent()
        #expect(damaged.intent == nil && damaged.damage?.contains("was damaged") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).contains { $0.hasPrefix("intent.json.corrupt-") })
        let id = try store.switchID()
        #expect(id.count == 16 && id.allSatisfy(\.isHexDigit))
        #expect(try store.switchID() == id)
    }
}
