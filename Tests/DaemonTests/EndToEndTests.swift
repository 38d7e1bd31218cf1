import ControlProtocol
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The device-free daemon `tapswitchd-fake` (tapswitchd's code and backend, the real switch and
/// packet loop, on in-memory devices: no privileges) driven only through the real `tapswitchctl`.
@Suite("tapswitchd and tapswitchctl end to end", .serialized, .heavy)
struct EndToEndTests {
    static let config = """
        [switch]
        name = "tsw-e2e"
        [extensions]
        enable = ["duplicate-mac-guard"]
        [[vm]]
        name = "boot1"
          [[vm.nic]]
          tap = "boot1-0"
          mac = "52:54:00:aa:00:01"
        """

    /// A private device-free daemon (no devices, no privileges).
    static func daemon(config: String = Self.config, environment: [String: String] = [:], cleanup: Cleanup) throws -> DaemonUnderTest {
        try DaemonUnderTest(config: .text(config), environment: environment, binary: "tapswitchd-fake", cleanup: cleanup)
    }

    @Test("VM lifecycle through tapswitchctl: show, vm start, veto, events order, vm stop")
    func lifecycle() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(cleanup: cleanup)
        try await d.start()

        // The VM declared in the config was started before READY.
        var show = try await d.ctl("show")
        #expect(show.status == 0)
        #expect(show.stdout.hasPrefix("switch tsw-e2e "))
        #expect(show.stdout.contains("boot1-0") && show.stdout.contains("52:54:00:aa:00:01"))

        let start = try await d.ctl("vm", "start", "web1", "--nic", "web1-0", "--mac", "52:54:00:12:34:56", "--owner", "nobody", "--mtu", "9000",
                                    "--nic", "web1-1,type=emulated,vlan=20", "--json")
        #expect(start.status == 0, "\(start.stderr)")
        let ports = try CLIJSON.decode([PortInfo].self, start.stdout)
        #expect(ports.map(\.name) == ["web1-0", "web1-1"])
        #expect(ports[0].nic?.mtu == 9000 && ports[0].nic?.owner == "nobody" && ports[0].type == .synthetic)
        #expect(ports[1].type == .emulated && ports[1].vlan == 20 && ports[1].vlanPolicy == .access(20))

        // --json after or before the subcommand.
        let j1 = try await d.ctl("show", "--json")
        let j2 = try await run(try Products.path("tapswitchctl"), ["--json", "--socket", d.socket, "show"])
        let s1 = try CLIJSON.decode(SwitchSnapshot.self, j1.stdout)
        let s2 = try CLIJSON.decode(SwitchSnapshot.self, j2.stdout)
        #expect(s1.ports.map(\.name) == ["boot1-0", "web1-0", "web1-1"])
        #expect(s2.ports.map(\.name) == s1.ports.map(\.name))

        // A duplicate MAC is vetoed: exit 1, the extension and reason on stderr, nothing left behind.
        let veto = try await d.ctl("vm", "start", "web2", "--nic", "web2-0", "--mac", "52:54:00:12:34:56")
        #expect(veto.status == 1)
        #expect(veto.stderr == "tapswitchctl: NIC_CREATE for port web2-0 vetoed by extension duplicate-mac-guard: MAC 52:54:00:12:34:56 is already used by port web1-0 of VM web1\n")
        show = try await d.ctl("show")
        #expect(!show.stdout.contains("web2-0"))

        let fdb = try await d.ctl("fdb")
        // No guest traffic on fake devices: the table answers, empty.
        #expect(fdb.status == 0 && !fdb.stdout.contains("52:54:00:12:34:56"), "\(fdb.stdout)\(fdb.stderr)")
        let ext = try await d.ctl("extensions", "--json")
        let exts = try CLIJSON.decode([ExtensionInfo].self, ext.stdout)
        #expect(exts.first { $0.name == "duplicate-mac-guard" }?.enabled == true)

        #expect(try await d.ctl("vm", "stop", "web1").status == 0)
        let stopAgain = try await d.ctl("vm", "stop", "web1")
        #expect(stopAgain.status == 1 && stopAgain.stderr == "tapswitchctl: no running VM named 'web1'\n")

        let all = try await d.events()
        #expect(all.map(\.seq) == Array(1...UInt64(all.count)), "sequence numbers are dense and ordered")
        let web1 = all.filter { $0.vmName == "web1" }.map { "\($0.kind.rawValue) \($0.portName)" }
        #expect(web1 == ["port-create web1-0", "nic-create web1-0", "port-create web1-1", "nic-create web1-1",
                         "nic-disconnect web1-0", "nic-delete web1-0", "port-teardown web1-0", "port-delete web1-0",
                         "nic-disconnect web1-1", "nic-delete web1-1", "port-teardown web1-1", "port-delete web1-1"])
        let vetoEvents = all.filter { $0.vmName == "web2" }.map(\.kind)
        #expect(vetoEvents == [.portCreate, .veto, .portTeardown, .portDelete])
        #expect(all.first { $0.kind == .veto }?.detail == "duplicate-mac-guard: MAC 52:54:00:12:34:56 is already used by port web1-0 of VM web1")
        let human = try await d.ctl("events")
        #expect(human.stdout.split(separator: "\n").first?.contains(" port-create port=1 name=boot1-0 vm=boot1") == true)

        #expect(try await d.stop() == 0)
        #expect(access(d.socket, F_OK) != 0, "the socket is removed on stop")
    }

    @Test("events --follow streams new events as they happen")
    func follow() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(cleanup: cleanup)
        try await d.start()
        let follower = ChildProcess()
        follower.executableURL = URL(fileURLWithPath: try Products.path("tapswitchctl"))
        follower.arguments = ["events", "--follow", "--json", "--reconnect-timeout", "0", "--socket", d.socket]
        let out = try OutputFile(in: d.dir, "follow")
        follower.standardOutput = out.handle
        follower.standardError = out.handle
        try follower.run()
        defer {
            if follower.isRunning { follower.terminate() }
            follower.waitUntilExit()
        }
        #expect(try await waitUntil { out.text.contains("boot1-0") }, "history first")
        #expect(try await d.ctl("vm", "start", "f1", "--nic", "f1-0").status == 0)
        #expect(try await waitUntil { out.text.contains(#""portName":"f1-0""#) && out.text.contains("nic-create") })
        let kinds = try out.text.split(separator: "\n").map { try CLIJSON.decode(SwitchEvent.self, String($0)).kind }
        #expect(kinds == [.portCreate, .nicCreate, .portCreate, .nicCreate])
        // The daemon stopping ends the stream; without reconnecting, the client says so and exits 3.
        #expect(try await d.stop() == 0)
        #expect(try await waitUntil { !follower.isRunning })
        #expect(follower.terminationStatus == 3)
        // With --json the end is a JSON error line, like the events before it.
        let last = try #require(out.text.split(separator: "\n").last.map(String.init))
        #expect(try CLIJSON.failure(last) == CLIJSON.Failure(code: "unreachable", message: "tapswitchd closed the event stream", exitCode: 3))
    }

    @Test("issue 13 item 6: events --follow reconnects across a restart and resumes; numbers continue, none missed or repeated")
    func followAcrossRestart() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(cleanup: cleanup)
        try await d.start()
        let follower = ChildProcess()
        follower.executableURL = URL(fileURLWithPath: try Products.path("tapswitchctl"))
        follower.arguments = ["events", "--follow", "--json", "--socket", d.socket]
        let out = try OutputFile(in: d.dir, "follow-out")
        let err = try OutputFile(in: d.dir, "follow-err")
        follower.standardOutput = out.handle
        follower.standardError = err.handle
        try follower.run()
        defer {
            if follower.isRunning { follower.terminate() }
            follower.waitUntilExit()
        }
        #expect(try await d.ctl("vm", "start", "r1", "--nic", "r1-0").status == 0)
        #expect(try await waitUntil { out.text.contains(#""portName":"r1-0""#) && out.text.contains("nic-create") })
        let before = try await d.events()
        let lastBefore = try #require(before.map(\.seq).max())

        #expect(try await d.stop() == 0)
        try await d.start()
        // The restarted daemon's events (re-adoption) and a new VM reach the same follower.
        #expect(try await d.ctl("vm", "start", "r2", "--nic", "r2-0").status == 0)
        #expect(try await waitUntil { out.text.contains(#""portName":"r2-0""#) && out.text.contains("nic-create") && out.text.contains("restore") })
        #expect(follower.isRunning, "the follower outlived the restart")
        #expect(err.text.contains("reconnected"), "it said so: \(err.text)")
        let seen = try out.text.split(separator: "\n").map { try CLIJSON.decode(SwitchEvent.self, String($0)) }
        let seqs = seen.map(\.seq)
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "increasing, no duplicates: \(seqs)")
        // A clean stop records the exact next number: the new run continues without a gap.
        let after = try await d.events()
        #expect(after.map(\.seq).min() == lastBefore + 1, "continues at \(lastBefore + 1): \(after.map(\.seq))")
        #expect(seqs == before.map(\.seq) + after.map(\.seq), "everything of both runs, once each")
        // --after filters by number.
        let tail = try CLIJSON.decode([SwitchEvent].self, try await d.ctl("events", "--json", "--after", String(lastBefore + 1)).stdout)
        #expect(tail.map(\.seq) == after.map(\.seq).filter { $0 > lastBefore + 1 })
        #expect(try await d.stop() == 0)
    }

    @Test("a restart re-adopts recorded VMs (restore events) and SIGHUP reloads the config")
    func restartAndReload() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(cleanup: cleanup)
        try await d.start()
        #expect(try await d.ctl("vm", "start", "keep", "--nic", "keep-0", "--mac", "52:54:00:bb:00:01").status == 0)
        #expect(try await d.ctl("port", "add-internal", "tsw-h0", "--mac", "02:00:00:00:00:09").status == 0)
        #expect(try await d.stop() == 0)

        // Same state dir, socket and config: a restart.
        try await d.start()
        let restored = try await d.ctl("events", "--json")
        let evs = try CLIJSON.decode([SwitchEvent].self, restored.stdout)
        // VM ports are taken over (restore); the internal port died with the old daemon's fd and is
        // created anew.
        #expect(evs.filter { $0.portName != "tsw-h0" }.allSatisfy { $0.restore })
        #expect(evs.filter { $0.portName == "tsw-h0" }.map(\.kind) == [.portCreate, .nicCreate, .nicConnect])
        #expect(Set(evs.map(\.portName)) == ["boot1-0", "keep-0", "tsw-h0"])
        let snap = try CLIJSON.decode(SwitchSnapshot.self, try await d.ctl("show", "--json").stdout)
        #expect(snap.ports.first { $0.name == "keep-0" }?.nic?.assignedMAC.description == "52:54:00:bb:00:01")

        // SIGHUP with a bad file: logged, old config kept, still answering.
        try (Self.config + "\nbogus = 1\n").write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        #expect(try await waitUntil { d.logText.contains("keeping the previous config") })
        #expect(d.logText.contains("tapswitchd.toml:10: unknown key 'vm.nic.bogus'"))
        #expect(try await d.ctl("version").status == 0)

        // SIGHUP with a newly declared VM: started; running ports untouched.
        try (Self.config + "\n[[vm]]\nname = \"late\"\n[[vm.nic]]\ntap = \"late-0\"\n").write(toFile: d.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        #expect(try await waitUntil { d.logText.contains("config reloaded") })
        let after = try CLIJSON.decode(SwitchSnapshot.self, try await d.ctl("show", "--json").stdout)
        #expect(after.ports.map(\.name) == ["tsw-h0", "keep-0", "boot1-0", "late-0"] || Set(after.ports.map(\.name)) == ["tsw-h0", "keep-0", "boot1-0", "late-0"])
        let news = try await d.events().filter { !$0.restore && $0.portName != "tsw-h0" }
        #expect(news.map(\.portName) == ["late-0", "late-0"], "nothing but the new VM changed")
        #expect(try await d.stop() == 0)
    }

    @Test("READY=1 is sent only once the control socket answers")
    func readyAfterSocket() async throws {
        let probe = try TempDir("tswntf")
        defer { probe.remove() }
        let notifyPath = probe.file("notify")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: notifyPath.utf8) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(rc == 0)
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))

        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(environment: ["NOTIFY_SOCKET": notifyPath], cleanup: cleanup)
        try d.launch()
        let path = d.socket
        let (message, answered) = try await offPool { () -> (String, Bool) in
            var buf = [UInt8](repeating: 0, count: 1024)
            while true {
                let n = recv(fd, &buf, buf.count, 0)
                guard n > 0 else { return ("<none>", false) }
                let m = String(decoding: buf[0..<n], as: UTF8.self)
                if m.hasPrefix("READY=1") {
                    // Immediately after READY the socket must answer.
                    return (m, (try? ControlConnection.roundTrip(.ping, path: path, timeout: 5))?.ok == true)
                }
            }
        }
        #expect(message == "READY=1\nSTATUS=1 VMs, 0 host ports")
        #expect(answered)
        #expect(try await d.stop() == 0)
    }

    @Test("a bad config exits 78 with file:line before touching anything")
    func badConfig() async throws {
        let dir = try TempDir("tswbad")
        defer { dir.remove() }
        let path = try dir.write("bad.toml", "[switch]\nname = \"ok\"\n[[vm]]\nname = \"v\"\n[[vm.nic]]\ntap = \"v0\"\nmac = \"52:54:00:zz:00:01\"\n")
        let r = try await run(try Products.path("tapswitchd"), ["--config", path, "--socket", dir.file("run/s.sock"), "--state-dir", dir.file("state")])
        #expect(r.status == 78)
        #expect(r.stderr == "\(path):7: vm.nic.mac: '52:54:00:zz:00:01' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)\n")
        #expect(access(dir.file("run"), F_OK) != 0 && access(dir.file("state"), F_OK) != 0, "nothing created")

        let check = try await run(try Products.path("tapswitchd"), ["--check-config", "--config", EndToEndTests.repo + "/config/tapswitchd.toml"])
        #expect(check.status == 0 && check.stdout.contains("OK"))
        // The example declares every shipped extension it uses: the daemon offers them all.
        let example = try await run(try Products.path("tapswitchd"), ["--check-config", "--config", EndToEndTests.repo + "/config/example-vms.toml"])
        #expect(example.status == 0 && example.stdout.contains("OK"), "\(example.stdout)\(example.stderr)")
        let level = try await run(try Products.path("tapswitchd"), ["--log-level", "loud", "--check-config"])
        #expect(level.status == 2)
        #expect(level.stderr.hasPrefix("tapswitchd: --log-level: 'loud' is not one of: trace, debug, info, notice, warning, error, critical"))
    }

    @Test("SO_PEERCRED: a non-root client is refused unless it is in [control] group")
    func peerCredentials() async throws {
        guard geteuid() == 0, let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("needs root and setpriv (util-linux) to run a client as another user") }
            return
        }
        // nogroup (65534) is allowed; the client runs as nobody, once without and once with that group.
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try Self.daemon(config: Self.config + "\n[control]\ngroup = \"65534\"\n", cleanup: cleanup)
        try await d.start()
        // Let nobody reach the socket at all, so the daemon's own check is what decides.
        chmod(d.dir.path, 0o755)
        chmod(d.socket, 0o666)
        let ctl = try Products.path("tapswitchctl")
        let refused = try await run(setpriv, ["--reuid=65534", "--regid=65533", "--clear-groups", ctl, "--socket", d.socket, "version"])
        #expect(refused.status == 1)
        #expect(refused.stderr == "tapswitchctl: permission denied: uid 65534 is not root and not in group '65534'\n")
        let allowed = try await run(setpriv, ["--reuid=65534", "--regid=65533", "--groups=65534", ctl, "--socket", d.socket, "version"])
        #expect(allowed.status == 0, "\(allowed.stderr)")
        #expect(try await d.stop() == 0)
    }

    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test("tapswitchctl rejects bad flags naming them (exit 2) and reports an unreachable daemon (exit 3)", arguments: [
        (["vm", "start", "w", "--nic", "w0", "--mtu", "70000"], Int32(2), "tapswitchctl: --mtu: MTU 70000 is out of range 68..65535 (see 'tapswitchctl help')\n"),
        (["vm", "start", "w", "--mac", "52:54:00:00:00:01"], 2, "tapswitchctl: --mac: must follow a --nic (per-NIC flags apply to the most recent --nic) (see 'tapswitchctl help')\n"),
        (["vm", "start", "w", "--nic", "w0,vlan=9999"], 2, "tapswitchctl: --nic w0,vlan=9999: VLAN 9999 is out of range 1..4094 (see 'tapswitchctl help')\n"),
        (["vm", "start", "w"], 2, "tapswitchctl: --nic: at least one --nic is required (see 'tapswitchctl help')\n"),
        (["port", "add-internal", "h0", "--mac", "ff:ff:ff:ff:ff:ff"], 2,
         "tapswitchctl: --mac: 'ff:ff:ff:ff:ff:ff' is a multicast address (low bit of the first octet set); a NIC needs a unicast MAC (see 'tapswitchctl help')\n"),
        (["port", "add-external", "this-is-too-long"], 2,
         "tapswitchctl: <device>: interface name 'this-is-too-long' is 16 characters; the limit is 15 (see 'tapswitchctl help')\n"),
        (["show", "--bogus"], 2, "tapswitchctl: Unknown option '--bogus' (see 'tapswitchctl help')\n"),
        (["show"], 3, "tapswitchctl: cannot connect to tapswitchd at /nonexistent/tapswitch.sock: No such file or directory\n"),
    ])
    func cli(args: [String], status: Int32, stderr: String) async throws {
        let r = try await run(try Products.path("tapswitchctl"), ["--socket", "/nonexistent/tapswitch.sock"] + args)
        #expect(r.status == status)
        #expect(r.stderr == stderr)
        #expect(r.stdout.isEmpty)
    }

    @Test("with --json (before or after the subcommand) errors are one JSON line on stdout, with code and exit code",
          arguments: [
        (["--json", "show"], CLIJSON.Failure(code: "unreachable", message: "cannot connect to tapswitchd at /nonexistent/tapswitch.sock: No such file or directory", exitCode: 3)),
        (["vm", "start", "w", "--nic", "w0", "--json"], CLIJSON.Failure(code: "unreachable", message: "cannot connect to tapswitchd at /nonexistent/tapswitch.sock: No such file or directory", exitCode: 3)),
        (["vm", "start", "w", "--nic", "w0,vlan=9999", "--json"], CLIJSON.Failure(code: "usage", message: "--nic w0,vlan=9999: VLAN 9999 is out of range 1..4094 (see 'tapswitchctl help')", exitCode: 2)),
        (["show", "--bogus", "--json"], CLIJSON.Failure(code: "usage", message: "Unknown option '--bogus' (see 'tapswitchctl help')", exitCode: 2)),
    ])
    func cliJSONErrors(args: [String], expected: CLIJSON.Failure) async throws {
        let r = try await run(try Products.path("tapswitchctl"), ["--socket", "/nonexistent/tapswitch.sock"] + args)
        #expect(r.status == expected.exitCode)
        #expect(r.stderr.isEmpty)
        #expect(r.stdout.split(separator: "\n").count == 1, "one line: \(r.stdout)")
        #expect(try CLIJSON.failure(r.stdout) == expected)
    }

    @Test("TAPSWITCH_SOCKET selects the socket when --socket is absent")
    func socketFromEnvironment() async throws {
        var env = ProcessInfo.processInfo.environment
        env["TAPSWITCH_SOCKET"] = "/nonexistent/env.sock"
        let r = try await run(try Products.path("tapswitchctl"), ["version"], environment: env)
        #expect(r.status == 3 && r.stderr.contains("/nonexistent/env.sock"))
    }

    @Test("--help documents the NIC rule and exit codes")
    func help() async throws {
        let r = try await run(try Products.path("tapswitchctl"), ["vm", "start", "--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Rule: per-NIC flags apply to the most recent --nic before them."))
        #expect(r.stdout.contains("--nic TAP,mac=MAC,owner=USER,group=GROUP,mtu=N,type=TYPE,vlan=N"))
        let top = try await run(try Products.path("tapswitchctl"), ["--help"])
        #expect(top.stdout.contains("Exit codes"))
    }

    @Test("systemd-analyze verify accepts the unit (ExecStart pointed at the built binary)")
    func systemdUnit() async throws {
        guard let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { Issue.record("systemd-analyze is missing (scripts/install-deps installs systemd)") }
            return
        }
        let dir = try TempDir("tswunit")
        defer { dir.remove() }
        let unit = try String(contentsOfFile: Self.repo + "/systemd/tapswitchd.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/tapswitchd --config /etc/tapswitch/tapswitchd.toml"))
        for line in ["Type=notify", "NotifyAccess=main", "KillMode=process", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes"] {
            #expect(unit.contains("\n\(line)\n"), "unit has \(line)")
        }
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let path = try dir.write("tapswitchd.service", unit.replacingOccurrences(of: "/usr/local/bin/tapswitchd", with: try Products.path("tapswitchd")))
        let r = try await run(analyze, ["verify", "--man=no", path])
        #expect(r.status == 0, "systemd-analyze verify: \(r.stderr)")
        #expect(!r.stderr.contains("tapswitchd.service"), "no warnings about the unit: \(r.stderr)")
    }
}
