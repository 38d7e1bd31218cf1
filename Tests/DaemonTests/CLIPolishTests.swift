import ControlProtocol
import Foundation
import Testing
import TestSupport

/// `tapswitchctl libvirt-hook` against a real tapswitchd (in-memory backend), "did you mean" for
/// mistyped commands, and the generated completion script.
@Suite("tapswitchctl: libvirt hook, suggestions, completions", .serialized, .heavy)
struct CLIPolishTests {
    /// A domain as libvirt hands it to a hook: one tapswitch interface on access VLAN 10 (by
    /// metadata), an isolated trunk (by the tsw- prefix, settings in the metadata), one that is not
    /// tapswitch's.
    static func domain(_ name: String) -> String {
        """
        <domain type='kvm'>
          <name>\(name)</name>
          <metadata>
            <tapswitch:switch xmlns:tapswitch='urn:tapswitch:libvirt:1'>
              <tapswitch:interface dev='lvh-0'><tapswitch:vlan><tapswitch:tag id='10'/></tapswitch:vlan></tapswitch:interface>
              <tapswitch:interface dev='tsw-lvh1'>
                <tapswitch:vlan trunk='yes'><tapswitch:tag id='10'/><tapswitch:tag id='20' nativeMode='untagged'/></tapswitch:vlan>
                <tapswitch:port isolated='yes'/>
              </tapswitch:interface>
            </tapswitch:switch>
          </metadata>
          <devices>
            <interface type='ethernet'><mac address='52:54:00:4c:00:01'/><target dev='lvh-0' managed='no'/><model type='virtio'/></interface>
            <interface type='ethernet'><mac address='52:54:00:4c:00:02'/><target dev='tsw-lvh1' managed='no'/><model type='e1000'/></interface>
            <interface type='ethernet'><mac address='52:54:00:4c:00:03'/><target dev='other0' managed='no'/></interface>
          </devices>
        </domain>
        """
    }

    /// Runs the hook as libvirt does: `tapswitchctl libvirt-hook DOMAIN OP SUBOP -` with the XML on stdin.
    static func hook(_ socket: String, _ xml: String, _ args: [String], dir: TempDir) async throws -> (status: Int32, stdout: String, stderr: String) {
        let file = try dir.write("domain-\(UInt32.random(in: 0...UInt32.max)).xml", xml)
        let ctl = try Products.path("tapswitchctl")
        let quoted = ([ctl, "--socket", socket, "libvirt-hook", "--qemu-conf", "/nonexistent"] + args).map { "'\($0)'" }.joined(separator: " ")
        return try await run("/bin/sh", ["-c", "exec \(quoted) < '\(file)'"])
    }

    @Test("prepare starts the domain's tapswitch NICs (MAC, VLAN, type; others untouched), release stops them")
    func hookLifecycle() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try EndToEndTests.daemon(config: "[switch]\nname = \"tsw-hook\"\n", cleanup: cleanup)
        try await d.start()
        let dir = try TempDir("tswhook")
        defer { dir.remove() }

        // Operations other than prepare/release do nothing, whatever the XML.
        var r = try await Self.hook(d.socket, "not xml", ["web9", "started", "begin", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)")

        r = try await Self.hook(d.socket, Self.domain("web9"), ["web9", "prepare", "begin", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)\n\(d.log)")
        #expect(r.stderr.contains("domain web9 prepare: vm start web9 --nic lvh-0"), "logged: \(r.stderr)")
        var ports = try await offPool { try d.show() }.ports
        #expect(ports.map(\.name).sorted() == ["lvh-0", "tsw-lvh1"])
        let a = ports.first { $0.name == "lvh-0" }
        #expect(a?.nic?.vmName == "web9")
        #expect(a?.nic?.assignedMAC.description == "52:54:00:4c:00:01")
        #expect(a?.type == .synthetic)
        #expect(a?.vlan == 10)
        let trunk = ports.first { $0.name == "tsw-lvh1" }
        #expect(trunk?.vlanPolicy == .trunk(allowed: [10, 20], native: 20))
        #expect(try await d.ctl("port", "get", "tsw-lvh1").stdout.contains("isolated"))
        #expect(ports.first { $0.name == "tsw-lvh1" }?.type == .emulated)

        // A second prepare (libvirtd restarted mid-start, say) replaces the leftovers instead of failing.
        r = try await Self.hook(d.socket, Self.domain("web9"), ["web9", "prepare", "begin", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("left over"))
        ports = try await offPool { try d.show() }.ports
        #expect(ports.count == 2)

        r = try await Self.hook(d.socket, Self.domain("web9"), ["web9", "release", "end", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try await offPool { try d.show() }.ports.isEmpty)
        // Releasing again (nothing there) is not an error.
        r = try await Self.hook(d.socket, Self.domain("web9"), ["web9", "release", "end", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test("prepare fails (libvirt then refuses to start) when the port cannot be made, with the reason")
    func hookFailures() async throws {
        let dir = try TempDir("tswhook")
        defer { dir.remove() }
        // No daemon: exit 3 naming the socket.
        var r = try await Self.hook("/nonexistent/tsw.sock", Self.domain("web8"), ["web8", "prepare", "begin", "-"], dir: dir)
        #expect(r.status == 3)
        #expect(r.stderr.contains("/nonexistent/tsw.sock"))
        // Bad settings: refused before any request, naming the interface.
        let bad = Self.domain("web8").replacingOccurrences(of: "<tapswitch:tag id='10'/>", with: "<tapswitch:tag id='10' nativeMode='tagged'/>")
        r = try await Self.hook("/nonexistent/tsw.sock", bad, ["web8", "prepare", "begin", "-"], dir: dir)
        #expect(r.status == 2)
        #expect(r.stderr.contains("interface 'lvh-0'"))
        // A domain with no tapswitch interface never talks to the daemon.
        r = try await Self.hook("/nonexistent/tsw.sock", "<domain><name>x</name><devices/></domain>", ["x", "prepare", "begin", "-"], dir: dir)
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test("a mistyped command gets a suggestion and exit 2", arguments: [
        (["shwo"], "tapswitchctl: unknown command 'tapswitchctl shwo'; did you mean 'tapswitchctl show'? (see 'tapswitchctl help')\n"),
        (["--json", "--socket", "/x", "vm", "strat", "w"], nil),
        (["vm", "strat", "w"], "tapswitchctl: unknown command 'tapswitchctl vm strat'; did you mean 'tapswitchctl vm start'? (see 'tapswitchctl help')\n"),
        (["frobnicate"], "tapswitchctl: unknown command 'tapswitchctl frobnicate' (commands: vm, port, "),
    ] as [([String], String?)])
    func suggestion(args: [String], stderr: String?) async throws {
        let r = try await run(try Products.path("tapswitchctl"), args)
        #expect(r.status == 2)
        if let stderr {
            // Without a close match the known commands are listed (the list grows: only its start is fixed).
            #expect(stderr.hasSuffix("\n") ? r.stderr == stderr : r.stderr.hasPrefix(stderr) && r.stderr.contains(", show, "), "\(r.stderr)")
        } else {
            #expect(try CLIJSON.failure(r.stdout).message.contains("did you mean 'tapswitchctl vm start'?"))
        }
    }

    @Test("the bash completion offers vm start's NIC flags, NIC types, and VM and port names from the daemon")
    func bashCompletion() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/bin/bash") else { return }
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try EndToEndTests.daemon(cleanup: cleanup)  // declares VM boot1 with TAP boot1-0
        try await d.start()
        let dir = try TempDir("tswcomp")
        defer { dir.remove() }
        let ctl = try Products.path("tapswitchctl")
        let script = try await run(ctl, ["--generate-completion-script", "bash"])
        #expect(script.status == 0)
        let path = try dir.write("tapswitchctl.bash", script.stdout)
        // Completes the words as bash would (COMP_* set as by the shell); the script calls tapswitchctl
        // from PATH for the names.
        func complete(_ words: [String]) async throws -> [String] {
            let line = words.joined(separator: " ")
            let program = """
            source '\(path)'
            COMP_WORDS=(\(words.map { "'\($0)'" }.joined(separator: " "))); COMP_CWORD=\(words.count - 1)
            COMP_LINE='\(line)'; COMP_POINT=${#COMP_LINE}
            _tapswitchctl tapswitchctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
            var env = ProcessInfo.processInfo.environment
            env["PATH"] = URL(fileURLWithPath: ctl).deletingLastPathComponent().path + ":" + (env["PATH"] ?? "/usr/bin:/bin")
            env["TAPSWITCH_SOCKET"] = d.socket
            let r = try await run("/bin/bash", ["-c", program], environment: env)
            #expect(r.status == 0, "\(r.stderr)")
            return r.stdout.split(separator: "\n").map(String.init)
        }
        let flags = try await complete(["tapswitchctl", "vm", "start", "web1", "--"])
        for flag in ["--nic", "--mac", "--owner", "--group", "--mtu", "--type", "--vlan"] {
            #expect(flags.contains(flag), "vm start web1 --<TAB> offers \(flag): \(flags)")
        }
        #expect(try await complete(["tapswitchctl", "vm", "start", "web1", "--nic", "a", "--type", ""]).sorted() == ["emulated", "synthetic"])
        #expect(try await complete(["tapswitchctl", "vm", "stop", ""]) == ["boot1"])
        #expect(try await complete(["tapswitchctl", "port", "remove", "boot"]) == ["boot1-0"])
        #expect(try await complete(["tapswitchctl", "sh"]) == ["show"])
        #expect(try await complete(["tapswitchctl", "port", "set", "boot1-0", "dhcp-g"]) == ["dhcp-guard="])
        #expect(try await complete(["tapswitchctl", "port", "reset", "boot1-0", "mac-l"]) == ["mac-limit"])
        #expect(try await complete(["tapswitchctl", "extension", "disable", "duplicate-"]) == ["duplicate-mac-guard"])
    }
}
