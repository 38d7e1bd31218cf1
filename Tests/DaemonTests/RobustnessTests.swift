import ControlProtocol
import Foundation
import LinuxNet
@testable import StateStore
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Issue 12, findings 5 and 10: the state file against full, read-only and damaged state
/// directories, and the capabilities the daemon keeps.
@Suite("State file robustness (issue 12 finding 5)")
struct StateFileRobustnessTests {
    @Test("finding 5: a directory named state.json is a clear error, not 'NSCocoaErrorDomain error 256'")
    func finding5_stateFileIsADirectory() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("state.json"), withIntermediateDirectories: false)
        let store = StateStore(directory: dir.path)
        let expected = "state file \(dir.path)/state.json is a directory, not a regular file; move it out of the way"
        #expect(throws: SwitchError(.invalidState, expected)) { try store.load() }
        #expect(throws: SwitchError(.invalidState, expected)) { try store.loadRecovering() }
    }

    @Test("finding 5: a damaged state file is set aside as state.json.corrupt-TIME and every readable entry recovered")
    func finding5_corruptedStateSetAside() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let store = StateStore(directory: dir.path)
        // Valid JSON, one VM entry damaged (MTU 1): the other VM and the port are recovered.
        let text = #"{"version": 1, "records": {"vms": [{"name": "a", "nics": [{"tap": "t", "mtu": 1}]}, {"name": "b", "nics": [{"tap": "b0"}]}], "internalPorts": [{"name": "h0"}], "externalPorts": []}}"#
        _ = try dir.write("state.json", text)
        let when = Date(timeIntervalSince1970: 1_800_000_000)
        let r = try store.loadRecovering(now: when)
        #expect(r.records.vms.map(\.name) == ["b"] && r.records.internalPorts.map(\.name) == ["h0"])
        #expect(r.lostEntries == 1)
        #expect(r.setAside == dir.file("state.json.corrupt-20270115T080000Z"))
        #expect(r.damage?.contains("MTU 1 is out of range") == true)
        #expect(!FileManager.default.fileExists(atPath: store.path))
        #expect(try String(contentsOfFile: dir.file("state.json.corrupt-20270115T080000Z"), encoding: .utf8) == text)

        // Garbage: nothing to recover; a second damaged file never overwrites the first one set aside.
        _ = try dir.write("state.json", "{\"version\": 1, \"rec")
        let g = try store.loadRecovering(now: when)
        #expect(g.records == StateRecords() && g.setAside == dir.file("state.json.corrupt-20270115T080000Z-2"))
        // A sound file is read as it is.
        try store.save(StateRecords(vms: [VMSpec(name: "c", nics: [NICSpec(tap: "c0")])]))
        #expect(try store.loadRecovering() == StateStore.Recovery(records: StateRecords(vms: [VMSpec(name: "c", nics: [NICSpec(tap: "c0")])])))
    }
}

@Suite("Daemon robustness on real TAPs (issue 12 findings 5 and 10)", .serialized, .heavy)
struct DaemonRobustnessTests {
    static let mac = "52:54:00:d5:00:01"

    func stateText(_ d: DaemonUnderTest) -> String {
        (try? String(contentsOfFile: d.stateDir + "/state.json", encoding: .utf8)) ?? ""
    }

    func linkExists(_ name: String) throws -> Bool { try RouteNetlink().link(named: name) != nil }

    @Test("finding 5: vm stop on a full or read-only state dir refuses with nothing changed; the TAP and state.json agree",
          arguments: ["full", "read-only"])
    func finding5_vmStopWhenStateCannotBeWritten(_ condition: String) async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let tap = UniqueNames().name("st0")
        cleanup.deleteLink(tap)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        // A tiny tmpfs of the test's own as the state directory.
        try FileManager.default.createDirectory(atPath: d.stateDir, withIntermediateDirectories: true)
        let mount = try Shell.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", d.stateDir])
        try #require(mount.status == 0, "mount tmpfs: \(mount.stderr)")
        let stateDir = d.stateDir
        cleanup.add("unmount \(stateDir)") { try Shell.run(["umount", "-l", stateDir]) }
        try await d.start()
        let start = try await d.ctl("vm", "start", "st", "--nic", tap, "--mac", Self.mac)
        try #require(start.status == 0, "vm start: \(start.stderr)")
        #expect(stateText(d).contains(tap))

        let filler = d.stateDir + "/filler"
        let expectedReason: String
        if condition == "full" {
            _ = try Shell.run(["dd", "if=/dev/zero", "of=\(filler)", "bs=4096"], timeout: .seconds(30))
            expectedReason = "No space left on device"
        } else {
            let ro = try Shell.run(["mount", "-o", "remount,ro", d.stateDir])
            try #require(ro.status == 0, "remount ro: \(ro.stderr)")
            expectedReason = "Read-only file system"
        }
        let refused = try await d.ctl("vm", "stop", "st")
        #expect(refused.status == 1)
        #expect(refused.stderr.hasPrefix("tapswitchctl: VM 'st' was not stopped: cannot record state: "), "\(refused.stderr)")
        #expect(refused.stderr.contains(expectedReason), "\(refused.stderr)")
        // Nothing changed: the TAP, the port and the record are all still there.
        #expect(try linkExists(tap))
        #expect(try await d.port(named: tap) != nil)
        #expect(stateText(d).contains(tap))

        // Once the state can be written again, the same request works and both agree again.
        if condition == "full" {
            try FileManager.default.removeItem(atPath: filler)
        } else {
            let rw = try Shell.run(["mount", "-o", "remount,rw", d.stateDir])
            try #require(rw.status == 0, "remount rw: \(rw.stderr)")
        }
        let stop = try await d.ctl("vm", "stop", "st")
        #expect(stop.status == 0, "\(stop.stderr)")
        #expect(try await waitUntil { try !linkExists(tap) })
        #expect(!stateText(d).contains(tap))
    }

    @Test("finding 5: a damaged state.json does not keep the daemon from starting; it is set aside and said loudly")
    func finding5_damagedStateFileDaemonStarts() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try FileManager.default.createDirectory(atPath: d.stateDir, withIntermediateDirectories: true)
        try #"{"version": 1, "records": {"vms": [{"name": "#.write(toFile: d.stateDir + "/state.json", atomically: true, encoding: .utf8)
        try await d.start()
        #expect(try await d.ctl("show").status == 0)
        let files = try FileManager.default.contentsOfDirectory(atPath: d.stateDir)
        #expect(files.contains { $0.hasPrefix("state.json.corrupt-") }, "\(files)")
        #expect(d.logText.contains("state file was damaged: moved it aside"), "\(d.log)")
        // The recovered (empty) records replaced the damaged file at once.
        #expect(try StateStore(directory: d.stateDir).load() == StateRecords())
    }

    /// The `Cap...:` line of /proc/PID/status (or of one of its threads) as a number.
    static func capabilityLine(_ status: String, _ key: String) -> UInt64? {
        status.split(separator: "\n").first { $0.hasPrefix(key + ":") }.flatMap { UInt64($0.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
    }

    @Test("finding 10: started as root, the daemon keeps only CAP_NET_ADMIN, CAP_NET_RAW and (offload = xdp) CAP_BPF (plus CAP_CHOWN with a control group) in every thread and set",
          arguments: [nil, "adm"] as [String?])
    func finding10_capabilitiesLimitedAtStart(_ group: String?) async throws {
        try Privilege.requireNetAdmin()
        try #require(geteuid() == 0, "needs root")
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let shipped = try String(contentsOfFile: Products.repositoryRoot + "/config/tapswitchd.toml", encoding: .utf8)
        let text = group.map { shipped.replacingOccurrences(of: "group = \"\"", with: "group = \"\($0)\"") } ?? shipped
        let d = try DaemonUnderTest(config: .text(text), cleanup: cleanup)
        try await d.start()
        let pid = try await d.json(VersionInfo.self, "version").pid
        let expected: UInt64 = (1 << 12) | (1 << 13) | (1 << 39) | (group == nil ? 0 : 1 << 0)
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        #expect(tasks.count > 1, "the daemon runs several threads")
        for task in tasks {
            let status = try String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8)
            #expect(Self.capabilityLine(status, "CapEff") == expected, "thread \(task): \(status)")
            #expect(Self.capabilityLine(status, "CapPrm") == expected, "thread \(task)")
            #expect(Self.capabilityLine(status, "CapBnd") == expected, "thread \(task)")
            #expect(Self.capabilityLine(status, "CapInh") == 0 && Self.capabilityLine(status, "CapAmb") == 0, "thread \(task)")
        }
        // What is kept is enough: the socket got its group, and a VM TAP comes and goes.
        if let group {
            var st = stat()
            #expect(stat(d.socket, &st) == 0 && st.st_gid == getgrnam(group)!.pointee.gr_gid)
        }
        let tap = UniqueNames().name("cap0")
        cleanup.deleteLink(tap)
        let start = try await d.ctl("vm", "start", "cap", "--nic", tap, "--mac", Self.mac)
        #expect(start.status == 0, "vm start: \(start.stderr)\n\(d.log)")
        // CAP_BPF with CAP_NET_ADMIN is enough to load the fast path and attach it (native XDP).
        #expect(try Shell.check(["ip", "-d", "link", "show", "dev", tap]).contains("prog/xdp"), "\(d.log)")
        #expect(try await d.ctl("vm", "stop", "cap").status == 0)
        #expect(try await waitUntil { try !linkExists(tap) })
    }
}
