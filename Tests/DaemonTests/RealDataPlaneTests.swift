import ControlProtocol
import FakeVM
import Foundation
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
import Locking
#endif

/// The real `tapswitchd` (DataPlane backend: persistent TAPs, AF_PACKET, netlink) driven only through the
/// `tapswitchctl` binary, with ``FakeVM``s attached to the TAPs exactly as QEMU attaches.
///
/// Each test has its own daemon (temp socket and state dir), its own TAP names and a ``Cleanup`` that
/// kills the daemon and deletes the TAPs also when the test fails half-way.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct RealDataPlaneTests {
    static let macA = "52:54:00:d0:00:0a"
    static let macB = "52:54:00:d0:00:0b"

    /// TAP names of one test: `t` + 4 random hex digits + role.
    struct Taps {
        let names = UniqueNames()
        var a: String { names.name("a0") }
        var b: String { names.name("b0") }
    }

    // MARK: - Shared steps

    /// `vm start` for VMs `va` and `vb` (one NIC each, explicit MACs), a FakeVM on each TAP, then waits
    /// for NIC_CONNECT on both ports.
    func startConnectedPair(_ d: DaemonUnderTest, _ taps: Taps, cleanup: Cleanup) async throws -> (GuestNIC, GuestNIC) {
        cleanup.deleteLink(taps.a)
        cleanup.deleteLink(taps.b)
        let startA = try await d.ctl("vm", "start", "va", "--nic", taps.a, "--mac", Self.macA, "--json")
        try #require(startA.status == 0, "vm start va: \(startA.stderr)\n\(d.log)")
        let startB = try await d.ctl("vm", "start", "vb", "--nic", "\(taps.b),mac=\(Self.macB)", "--json")
        try #require(startB.status == 0, "vm start vb: \(startB.stderr)\n\(d.log)")
        let portsA = try CLIJSON.decode([PortInfo].self, startA.stdout)
        #expect(portsA.map(\.name) == [taps.a])
        #expect(portsA.first?.nic?.assignedMAC.description == Self.macA)
        #expect(portsA.first?.nic?.state == .created, "not connected before anything attaches")
        #expect(try await linkExists(taps.a), "vm start created \(taps.a)")
        #expect(try await linkExists(taps.b), "vm start created \(taps.b)")

        let a = try GuestNIC(tap: taps.a, mac: Self.macA)
        let b = try GuestNIC(tap: taps.b, mac: Self.macB)
        cleanup.add("detach FakeVMs") {
            a.close()
            b.close()
        }
        try await d.waitForEvents("nic-connect on \(taps.a) and \(taps.b)") { evs in
            [taps.a, taps.b].allSatisfy { tap in evs.contains { $0.kind == .nicConnect && $0.portName == tap } }
        }
        return (a, b)
    }

    /// A broadcast from `a` reaches `b`, then a unicast from `b` to `a`'s MAC reaches `a`.
    /// Returns what failed, nil when both crossed.
    func crossTraffic(_ a: GuestNIC, _ b: GuestNIC) async throws -> String? {
        let token = UInt32.random(in: 1...UInt32.max)
        return try await offPool { () throws -> String? in
            try a.send(Probe.frame(dst: TestFrames.broadcastMAC, src: a.mac, token: token, seq: 0))
            let bcast = try b.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token }
            guard let bcast else { return "broadcast \(a.tap) -> \(b.tap) did not arrive within 3 s" }
            guard Array(bcast[0..<6]) == TestFrames.broadcastMAC, Array(bcast[6..<12]) == a.mac, Probe.parse(bcast)?.seq == 0 else {
                return "broadcast arrived altered: \(bcast.prefix(32))"
            }
            try b.send(Probe.frame(dst: a.mac, src: b.mac, token: token, seq: 1))
            let ucast = try a.receive(timeout: .seconds(3)) { Probe.parse($0)?.token == token }
            guard let ucast else { return "unicast \(b.tap) -> \(a.tap) did not arrive within 3 s" }
            guard Array(ucast[0..<6]) == a.mac, Probe.parse(ucast)?.seq == 1 else { return "unicast arrived altered: \(ucast.prefix(32))" }
            return nil
        }
    }

    func kinds(_ events: [SwitchEvent], port: String) -> [EventKind] {
        events.filter { $0.portName == port }.map(\.kind)
    }

    /// `vm stop` both, then the TAPs are gone and `show` lists no ports; SIGTERM exits 0.
    func stopPairAndDaemon(_ d: DaemonUnderTest, _ taps: Taps) async throws {
        for vm in ["va", "vb"] {
            let r = try await d.ctl("vm", "stop", vm)
            #expect(r.status == 0, "vm stop \(vm): \(r.stderr)")
        }
        #expect(try await !linkExists(taps.a), "\(taps.a) removed by vm stop")
        #expect(try await !linkExists(taps.b), "\(taps.b) removed by vm stop")
        #expect(try await d.show().ports.isEmpty)
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    // MARK: - 1. Lifecycle and forwarding

    @Test("two VMs: vm start, QEMU-style attach, frames both ways, exact lifecycle events, vm stop removes the TAPs")
    func twoVMs() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let taps = Taps()
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let (a, b) = try await startConnectedPair(d, taps, cleanup: cleanup)

        let failure = try await crossTraffic(a, b)
        #expect(failure == nil, "\(failure ?? "")")
        // The unicast went to a learned destination: A's MAC sits on A's port.
        let fdb = try await d.json([FDBEntry].self, "fdb")
        #expect(fdb.contains { $0.mac.description == Self.macA && $0.portName == taps.a }, "fdb: \(fdb)")
        #expect(fdb.contains { $0.mac.description == Self.macB && $0.portName == taps.b }, "fdb: \(fdb)")

        let connected = try await d.events()
        #expect(connected.allSatisfy { !$0.restore })
        #expect(kinds(connected, port: taps.a) == [.portCreate, .nicCreate, .nicConnect])
        #expect(kinds(connected, port: taps.b) == [.portCreate, .nicCreate, .nicConnect])
        #expect(connected.map(\.seq) == Array(1...UInt64(connected.count)), "dense, ordered sequence numbers")
        #expect(connected.filter { $0.portName == taps.a }.allSatisfy { $0.vmName == "va" }, "\(connected.map(\.summary))")
        #expect(connected.filter { $0.portName == taps.a && $0.kind != .portCreate }.allSatisfy { $0.vmName == "va" })
        let snap = try await d.show()
        #expect(snap.ports.map(\.name).sorted() == [taps.a, taps.b].sorted())
        #expect(snap.ports.allSatisfy { $0.nic?.state == .connected })
        #expect(snap.ports.first { $0.name == taps.a }.map { $0.counters.framesIn >= 1 && $0.counters.framesOut >= 1 } == true,
                "counters: \(snap.ports.map(\.counters))")

        // QEMU goes away: NIC_DISCONNECT, the ports stay.
        a.close()
        b.close()
        try await d.waitForEvents("nic-disconnect on both") { evs in
            [taps.a, taps.b].allSatisfy { tap in evs.contains { $0.kind == .nicDisconnect && $0.portName == tap } }
        }
        #expect(try await d.show().ports.allSatisfy { $0.nic?.state == .disconnected })
        #expect(try await linkExists(taps.a), "TAPs stay while the VMs are defined")
        #expect(try await linkExists(taps.b), "TAPs stay while the VMs are defined")

        for vm in ["va", "vb"] {
            let r = try await d.ctl("vm", "stop", vm)
            #expect(r.status == 0, "vm stop \(vm): \(r.stderr)")
        }
        let all = try await d.events()
        let full: [EventKind] = [.portCreate, .nicCreate, .nicConnect, .nicDisconnect, .nicDelete, .portTeardown, .portDelete]
        #expect(kinds(all, port: taps.a) == full, "\(all.map(\.summary))")
        #expect(kinds(all, port: taps.b) == full, "\(all.map(\.summary))")
        #expect(try await !linkExists(taps.a), "\(taps.a) removed by vm stop")
        #expect(try await !linkExists(taps.b), "\(taps.b) removed by vm stop")
        #expect(try await d.show().ports.isEmpty)
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    // MARK: - 2. Bad control requests during traffic

    /// Raw requests: (what, bytes, half-close, abandon, text the error must contain).
    static func rawCases(bad tap: String) -> [(String, [UInt8], Bool, Bool, [String])] {
        var oversize = Array(#"{"op":"vm-stop","name":""#.utf8)
        oversize += [UInt8](repeating: UInt8(ascii: "a"), count: 200_000)
        func line(_ s: String) -> [UInt8] { Array((s + "\n").utf8) }
        return [
            ("garbage", line("garbage \u{1}\u{7f} {{{"), false, false, ["not valid JSON"]),
            ("binary, not UTF-8", [0xff, 0xfe, 0x00, 0x80, 0x0a], false, false, ["not valid UTF-8"]),
            ("oversize", oversize, false, false, ["larger than the limit of \(Wire.maxRequestBytes) bytes"]),
            ("unknown field", line(#"{"op":"show","verbose":true}"#), false, false, ["verbose", "unknown field"]),
            ("unknown op", line(#"{"op":"reboot"}"#), false, false, ["op", "reboot"]),
            ("wrong type", line(#"{"op":"vm-stop","name":42}"#), false, false, ["name", "expected a string"]),
            ("half request, then half-close", Array(#"{"op":"vm-st"#.utf8), true, false, ["incomplete request", "12 bytes"]),
            ("half request, then gone", Array(#"{"op":"vm-start","vm":{"name":"#.utf8), false, true, []),
            ("bad MAC value", line(#"{"op":"vm-start","vm":{"name":"vbad","nics":[{"tap":"\#(tap)","mac":"52:54:00:zz:00:01"}]}}"#),
             false, false, ["mac", "52:54:00:zz:00:01"]),
            ("MTU out of range", line(#"{"op":"vm-start","vm":{"name":"vbad","nics":[{"tap":"\#(tap)","mtu":70000}]}}"#), false, false, ["mtu", "70000"]),
            ("VLAN out of range", line(#"{"op":"vm-start","vm":{"name":"vbad","nics":[{"tap":"\#(tap)","vlan":5000}]}}"#), false, false, ["vlan", "5000"]),
            ("TAP name with '/'", line(#"{"op":"vm-start","vm":{"name":"vbad","nics":[{"tap":"x/y"}]}}"#), false, false, ["tap", "x/y"]),
        ]
    }

    @Test("bad control requests and bad CLI invocations are rejected naming the problem; traffic and show are unaffected")
    func badRequestsDuringTraffic() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let taps = Taps()
        let badTap = taps.names.name("bad0")
        cleanup.deleteLink(badTap)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let (a, b) = try await startConnectedPair(d, taps, cleanup: cleanup)
        let first = try await crossTraffic(a, b)
        try #require(first == nil, "\(first ?? "")")

        /// After every bad request: the daemon runs, frames cross, `show` answers with both ports connected.
        func stillFine(_ what: String) async throws {
            #expect(d.isRunning, "tapswitchd died after: \(what)\n\(d.log)")
            let failure = try await crossTraffic(a, b)
            #expect(failure == nil, "after \(what): \(failure ?? "")")
            let show = try await d.ctl("show")
            #expect(show.status == 0 && show.stdout.contains(taps.a) && show.stdout.contains(taps.b), "show after \(what): \(show.stderr)")
            let snap = try await d.show()
            #expect(snap.ports.count == 2 && snap.ports.allSatisfy { $0.nic?.state == .connected }, "after \(what): \(snap.ports)")
            #expect(try await !linkExists(badTap), "\(badTap) must not exist after: \(what)")
        }

        let path = d.socket
        for (what, bytes, halfClose, abandon, mustContain) in Self.rawCases(bad: badTap) {
            let lines = try await offPool { try RawControlClient.exchange(path: path, bytes, halfClose: halfClose, abandon: abandon) }
            if !abandon {
                #expect(lines.count == 1, "\(what): one reply line, got \(lines)")
                let reply = try? Wire.decodeResponse(Data((lines.first ?? "").utf8))
                #expect(reply?.ok == false, "\(what): \(lines)")
                let error = reply?.error ?? ""
                for text in mustContain {
                    #expect(error.contains(text), "\(what): error \"\(error)\" should mention '\(text)'")
                }
                print("RealDataPlane raw \(what): \(error)")
            }
            try await stillFine("raw \(what)")
        }

        // The same bad values through the CLI: refused with exit 2 before reaching the daemon.
        let cliCases: [([String], [String])] = [
            (["--nic", badTap, "--mac", "52:54:00:zz:00:01"], ["--mac", "52:54:00:zz:00:01"]),
            (["--nic", badTap, "--mtu", "70000"], ["--mtu", "70000"]),
            (["--nic", badTap, "--vlan", "5000"], ["--vlan", "5000"]),
            (["--nic", "x/y"], ["--nic", "x/y"]),
            (["--nic", "\(badTap),vlan=5000"], ["vlan", "5000"]),
        ]
        for (nicArgs, mustContain) in cliCases {
            let r = try await d.ctl(["vm", "start", "vbad"] + nicArgs)
            let what = "vm start vbad \(nicArgs.joined(separator: " "))"
            #expect(r.status == 2, "\(what): exit \(r.status), \(r.stderr)")
            #expect(r.stdout.isEmpty)
            #expect(r.stderr.hasPrefix("tapswitchctl: ") && r.stderr.split(separator: "\n").count == 1, "\(what): \(r.stderr)")
            for text in mustContain {
                #expect(r.stderr.contains(text), "\(what): stderr \"\(r.stderr)\" should mention '\(text)'")
            }
            print("RealDataPlane cli \(what): \(r.stderr.trimmingCharacters(in: .newlines))")
            try await stillFine(what)
        }

        // None of it reached the switch: only the pair's own lifecycle events.
        let evs = try await d.events()
        #expect(evs.allSatisfy { $0.portName == taps.a || $0.portName == taps.b }, "\(evs.map(\.summary))")
        a.close()
        b.close()
        try await stopPairAndDaemon(d, taps)
    }

    // MARK: - 3. Veto rollback

    @Test("a vm start vetoed by duplicate-mac-guard on its second NIC leaves no TAP, no port, and logs veto then teardown")
    func vetoedStartLeavesNothing() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let tapX = names.name("x0"), tapY0 = names.name("y0"), tapY1 = names.name("y1")
        for tap in [tapX, tapY0, tapY1] { cleanup.deleteLink(tap) }
        let macM = "52:54:00:d0:00:4d", macY = "52:54:00:d0:00:59"
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()

        let x = try await d.ctl("vm", "start", "x", "--nic", tapX, "--mac", macM)
        try #require(x.status == 0, "vm start x: \(x.stderr)\n\(d.log)")
        let y = try await d.ctl("vm", "start", "y", "--nic", tapY0, "--mac", macY, "--nic", "\(tapY1),mac=\(macM)")
        #expect(y.status == 1, "exit \(y.status): \(y.stderr)")
        #expect(y.stderr.contains("duplicate-mac-guard") && y.stderr.contains(macM) && y.stderr.contains(tapX), "\(y.stderr)")
        print("RealDataPlane veto: \(y.stderr.trimmingCharacters(in: .newlines))")

        #expect(try await !linkExists(tapY0), "the vetoed VM's first TAP was removed again")
        #expect(try await !linkExists(tapY1), "the vetoed NIC's TAP was removed again")
        #expect(try await linkExists(tapX))
        let snap = try await d.show()
        #expect(snap.ports.map(\.name) == [tapX])
        let fdb = try await d.json([FDBEntry].self, "fdb")
        #expect(fdb.allSatisfy { $0.portName == tapX }, "\(fdb)")

        let evs = try await d.events()
        print("RealDataPlane veto events:\n  " + evs.map(\.summary).joined(separator: "\n  "))
        #expect(kinds(evs, port: tapX) == [.portCreate, .nicCreate])
        #expect(kinds(evs, port: tapY1) == [.portCreate, .veto, .portTeardown, .portDelete])
        let y0 = kinds(evs, port: tapY0)
        #expect(y0.prefix(2) == [.portCreate, .nicCreate] && y0.suffix(2) == [.portTeardown, .portDelete] && !y0.contains(.nicConnect), "\(y0)")
        let veto = evs.first { $0.kind == .veto }
        #expect(veto?.detail?.contains("duplicate-mac-guard") == true, "\(veto?.detail ?? "no veto event")")
        #expect(veto?.vmName == "y")
        #expect(veto?.detail?.hasPrefix("duplicate-mac-guard: MAC \(macM) ") == true, "\(veto?.detail ?? "no veto event")")
        if let veto, let lastY0 = evs.last(where: { $0.portName == tapY0 }) {
            #expect(lastY0.seq > veto.seq, "the first NIC is rolled back after the veto")
        }

        // Nothing left behind: the same names and a fresh MAC start cleanly.
        let retry = try await d.ctl("vm", "start", "y", "--nic", tapY0, "--mac", macY, "--nic", "\(tapY1),mac=52:54:00:d0:00:5a")
        #expect(retry.status == 0, "\(retry.stderr)")
        for vm in ["y", "x"] {
            let r = try await d.ctl("vm", "stop", vm)
            #expect(r.status == 0, "vm stop \(vm): \(r.stderr)")
        }
        for tap in [tapX, tapY0, tapY1] { #expect(try await !linkExists(tap)) }
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    @Test("error codes from the core and the data plane reach tapswitchctl --json unchanged; the VLAN policy is shown")
    func errorCodesEndToEnd() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let tapX = names.name("x0"), tapZ = names.name("z0"), missing = names.name("no0")
        for tap in [tapX, tapZ] { cleanup.deleteLink(tap) }
        let macM = "52:54:00:d0:00:6d"
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let x = try await d.ctl("vm", "start", "x", "--nic", tapX, "--mac", macM, "--vlan", "20")
        try #require(x.status == 0, "vm start x: \(x.stderr)\n\(d.log)")
        // The core's VLAN property, as the wire shows it.
        let port = try await d.port(named: tapX)
        #expect(port?.vlanPolicy == .access(20) && port?.vlan == 20, "\(String(describing: port))")

        /// Runs `tapswitchctl ARGS --json`, expecting exit 1 and a JSON error on stdout.
        func failure(_ args: String...) async throws -> CLIJSON.Failure {
            let r = try await d.ctl(args + ["--json"])
            #expect(r.status == 1 && r.stderr.isEmpty, "\(args): exit \(r.status) \(r.stderr)")
            return try CLIJSON.failure(r.stdout)
        }
        // The core's veto (duplicate-mac-guard in the shipped config), with the extension named.
        let veto = try await failure("vm", "start", "z", "--nic", tapZ, "--mac", macM)
        #expect(veto.code == "vetoed" && veto.vetoingExtension == "duplicate-mac-guard" && veto.vetoReason?.contains(macM) == true, "\(veto)")
        // The data plane refusing a device name in use (a VM's TAP) as an internal port.
        let exists = try await failure("port", "add-internal", tapX)
        #expect(exists.code == "exists" && exists.message.contains(tapX), "\(exists)")
        // The data plane not finding a device for the uplink.
        let noDevice = try await failure("port", "add-external", missing)
        #expect(noDevice.code == "notFound" && noDevice.message.contains(missing), "\(noDevice)")
        #expect(try await failure("vm", "stop", "nosuch").code == "notFound")
        #expect(try await failure("vm", "start", "x", "--nic", tapZ).code == "exists")
        #expect(try await !linkExists(tapZ), "nothing created by the refused requests")

        #expect(try await d.ctl("vm", "stop", "x").status == 0)
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    // MARK: - 4. Crash and re-adoption

    /// A paced A→B flow and a counter on B, each on a thread of its own.
    final class Flow: Sendable {
        let token = UInt32.random(in: 1...UInt32.max)
        let stopping = Atomic<Bool>(false)
        let senderStopping = Atomic<Bool>(false)
        let finished = Atomic<Int>(0)
        /// Frames sent so far; frame `n` carries seq `n`.
        let sent = Atomic<UInt32>(0)
        let received = Locked<[(seq: UInt32, at: ContinuousClock.Instant)]>([])
        let errors = Locked<[String]>([])

        func start(from a: GuestNIC, to b: GuestNIC, interval: Duration = .milliseconds(2), maxTime: Duration = .seconds(90)) {
            let sender = Thread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                let end = ContinuousClock.now + maxTime
                var seq: UInt32 = 0
                while !stopping.load(ordering: .acquiring) && !senderStopping.load(ordering: .acquiring) && ContinuousClock.now < end {
                    do { try a.send(Probe.frame(dst: b.mac, src: a.mac, token: token, seq: seq)) } catch {
                        errors.withLock { $0.append("send #\(seq) on \(a.tap): \(error)") }
                        return
                    }
                    seq += 1
                    sent.store(seq, ordering: .releasing)
                    // Pacing of the flow, not synchronisation.
                    var pause = timespec(tv_sec: 0, tv_nsec: Int(interval.components.attoseconds / 1_000_000_000))
                    _ = nanosleep(&pause, nil)
                }
            }
            let receiver = Thread { [self] in
                defer { finished.add(1, ordering: .releasing) }
                while !stopping.load(ordering: .acquiring) {
                    do {
                        if let f = try b.receive(timeout: .milliseconds(50), where: { Probe.parse($0)?.token == token }), let p = Probe.parse(f) {
                            let now = ContinuousClock.now
                            received.withLock { $0.append((p.seq, now)) }
                        }
                    } catch {
                        errors.withLock { $0.append("receive on \(b.tap): \(error)") }
                        return
                    }
                }
            }
            sender.name = "dreal-sender"
            receiver.name = "dreal-receiver"
            sender.start()
            receiver.start()
        }

        /// Stops both threads and waits for them (blocking; idempotent).
        func halt() throws {
            stopping.store(true, ordering: .releasing)
            try TestSupport.waitUntil("traffic threads end", timeout: .seconds(10)) { finished.load(ordering: .acquiring) == 2 }
        }
    }

    @Test("SIGKILL during traffic: TAPs and attached VMs survive, the restarted daemon re-adopts them and forwarding resumes")
    func sigkillAndReadopt() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let taps = Taps()
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let (a, b) = try await startConnectedPair(d, taps, cleanup: cleanup)
        let warmup = try await crossTraffic(a, b)
        try #require(warmup == nil, "\(warmup ?? "")")

        let flow = Flow()
        flow.start(from: a, to: b)
        cleanup.add("stop the flow") { try flow.halt() }
        let flowing = try await waitUntil(10) { flow.received.withLock { $0.count } >= 100 }
        try #require(flowing, "the A->B flow never got going: \(flow.errors.withLock { $0 })\n\(d.log)")

        let killedAt = ContinuousClock.now
        try await d.sigkill()
        let sentAtDeath = flow.sent.load(ordering: .acquiring)
        #expect(try await linkExists(taps.a), "TAPs outlive the daemon")
        #expect(try await linkExists(taps.b), "TAPs outlive the daemon")
        // Keep the daemon down while at least 50 more frames go out (into the void).
        let advanced = try await waitUntil(10) { flow.sent.load(ordering: .acquiring) >= sentAtDeath + 50 }
        #expect(advanced, "the sender stalled while the daemon was down: \(flow.errors.withLock { $0 })")
        #expect(flow.errors.withLock { $0 }.isEmpty, "the FakeVMs stay attached with no error: \(flow.errors.withLock { $0 })")

        let restartAt = ContinuousClock.now
        let sentAtRestart = flow.sent.load(ordering: .acquiring)
        try await d.start()
        let readyAt = ContinuousClock.now
        let readopted = try await d.waitForEvents("re-adoption with nic-connect") { evs in
            [taps.a, taps.b].allSatisfy { tap in
                evs.contains { $0.kind == .portCreate && $0.portName == tap && $0.restore }
                    && evs.contains { $0.kind == .nicCreate && $0.portName == tap && $0.restore }
                    && evs.contains { $0.kind == .nicConnect && $0.portName == tap }
            }
        }
        print("RealDataPlane restart events:\n  " + readopted.map(\.summary).joined(separator: "\n  "))
        #expect(kinds(readopted, port: taps.a) == [.portCreate, .nicCreate, .nicConnect])
        #expect(kinds(readopted, port: taps.b) == [.portCreate, .nicCreate, .nicConnect])

        let resumed = try await waitUntil(10) { flow.received.withLock { $0.contains { $0.seq >= sentAtRestart } } }
        #expect(resumed, "B got no frame sent after the restart; errors: \(flow.errors.withLock { $0 })\n\(d.log)")
        // A little more after resumption, so the tail is not a single frame.
        let sentAtResume = flow.sent.load(ordering: .acquiring)
        _ = try await waitUntil(5) { flow.received.withLock { $0.contains { $0.seq >= sentAtResume + 20 } } }
        // Stop sending first and let B read what is still on its way, so the tail does not count as lost.
        flow.senderStopping.store(true, ordering: .releasing)
        _ = try await waitUntil(5) { flow.finished.load(ordering: .acquiring) >= 1 }
        let lastSent = flow.sent.load(ordering: .acquiring)
        _ = try await waitUntil(3) { flow.received.withLock { $0.contains { $0.seq == lastSent - 1 } } }
        try await offPool { try flow.halt() }
        #expect(flow.errors.withLock { $0 }.isEmpty, "\(flow.errors.withLock { $0 })")

        let snap = try await d.show()
        #expect(snap.ports.map(\.name).sorted() == [taps.a, taps.b].sorted())
        #expect(snap.ports.allSatisfy { $0.nic?.state == .connected }, "\(snap.ports.map { ($0.name, $0.nic?.state) })")
        #expect(snap.ports.first { $0.name == taps.a }?.nic?.assignedMAC.description == Self.macA)
        let after = try await crossTraffic(a, b)
        #expect(after == nil, "after the restart: \(after ?? "")")

        // The forwarding gap.
        let rx = flow.received.withLock { $0 }.sorted { $0.at < $1.at }
        let seqs = rx.map(\.seq)
        #expect(Set(seqs).count == seqs.count, "no frame delivered twice")
        let ghosts = rx.filter { $0.seq >= sentAtDeath && $0.seq < sentAtRestart }
        #expect(ghosts.isEmpty, "frames sent while no daemon ran were delivered: \(ghosts.map(\.seq))")
        let lastBefore = rx.last { $0.at <= killedAt }
        let firstAfter = rx.first { $0.seq >= sentAtRestart }
        // Once forwarding has resumed, nothing is lost (500 frames/s is far below any limit).
        if let firstAfter {
            let got = Set(seqs)
            let missing = (firstAfter.seq..<lastSent).filter { !got.contains($0) }
            #expect(missing.isEmpty, "\(missing.count) frames lost after forwarding resumed: \(missing.prefix(20))")
        }
        if let lastBefore, let firstAfter {
            func ms(_ x: Duration) -> String { String(format: "%.1f ms", Double(x.components.seconds) * 1000 + Double(x.components.attoseconds) / 1e15) }
            let gap = lastBefore.at.duration(to: firstAfter.at)
            let down = killedAt.duration(to: restartAt)
            print("""
                RealDataPlane SIGKILL forwarding gap: \(ms(gap)) (last frame before the kill -> first frame after the restart); \
                daemon down \(ms(down)); restart to ready \(ms(restartAt.duration(to: readyAt))); \
                first frame relative to ready \(ms(readyAt.duration(to: firstAfter.at))); gap minus downtime \(ms(gap - down)); \
                frames sent \(lastSent), received \(rx.count), lost \(Int(lastSent) - rx.count): \
                \(sentAtRestart - sentAtDeath) sent with no daemon, \(firstAfter.seq - sentAtRestart) sent between the restart and \
                the first delivery, \(Int(sentAtDeath) - 1 - Int(lastBefore.seq)) between the last delivery before the kill and the test seeing the daemon gone
                """)
            #expect(gap < .seconds(20))
        }

        a.close()
        b.close()
        try await d.waitForEvents("nic-disconnect on both after the restart") { evs in
            [taps.a, taps.b].allSatisfy { tap in evs.contains { $0.kind == .nicDisconnect && $0.portName == tap } }
        }
        try await stopPairAndDaemon(d, taps)
    }

    @Test("Issue 12 finding 11: a planned restart (SIGUSR2) hands the receive sockets over: every frame sent across it arrives, once")
    func plannedRestartLosesNothing() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let taps = Taps()
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let (a, b) = try await startConnectedPair(d, taps, cleanup: cleanup)
        let warmup = try await crossTraffic(a, b)
        try #require(warmup == nil, "\(warmup ?? "")")

        let flow = Flow()
        flow.start(from: a, to: b, interval: .milliseconds(1))
        cleanup.add("stop the flow") { try flow.halt() }
        let flowing = try await waitUntil(10) { flow.received.withLock { $0.count } >= 100 }
        try #require(flowing, "the A->B flow never got going: \(flow.errors.withLock { $0 })\n\(d.log)")

        let sentAtRestart = flow.sent.load(ordering: .acquiring)
        d.signal(SIGUSR2)
        let tookOver = try await waitUntil(20) { d.logText.contains("took over receive sockets") && d.logText.components(separatedBy: " ready ").count >= 3 }
        try #require(tookOver, "the restarted image did not report the hand-over\n\(d.log)")
        #expect(d.isRunning, "the same process runs on (exec)")
        #expect(d.logText.contains("sockets=6"), "both ports' three sockets were taken over\n\(d.log)")
        let resumed = try await waitUntil(10) { flow.received.withLock { $0.contains { $0.seq >= sentAtRestart + 200 } } }
        #expect(resumed, "B got no frame sent well after the restart; errors: \(flow.errors.withLock { $0 })\n\(d.log)")
        flow.senderStopping.store(true, ordering: .releasing)
        _ = try await waitUntil(5) { flow.finished.load(ordering: .acquiring) >= 1 }
        let lastSent = flow.sent.load(ordering: .acquiring)
        _ = try await waitUntil(5) { flow.received.withLock { $0.contains { $0.seq == lastSent - 1 } } }
        try await offPool { try flow.halt() }
        #expect(flow.errors.withLock { $0 }.isEmpty, "\(flow.errors.withLock { $0 })")

        let rx = flow.received.withLock { $0 }.sorted { $0.at < $1.at }
        let seqs = rx.map(\.seq)
        #expect(Set(seqs).count == seqs.count, "no frame delivered twice")
        let got = Set(seqs)
        let missing = (0..<lastSent).filter { !got.contains($0) }
        #expect(missing.isEmpty, "\(missing.count) of \(lastSent) frames lost across the planned restart: \(missing.prefix(20))\n\(d.log)")
        var gap = Duration.zero
        for (x, y) in zip(rx, rx.dropFirst()) where x.at.duration(to: y.at) > gap { gap = x.at.duration(to: y.at) }
        print("RealDataPlane planned restart: \(lastSent) frames sent at 1 per ms, \(rx.count) received, \(missing.count) lost; "
            + "longest silence \(Double(gap.components.attoseconds) / 1e15 + Double(gap.components.seconds) * 1000) ms")
        let after = try await crossTraffic(a, b)
        #expect(after == nil, "after the restart: \(after ?? "")")
        a.close()
        b.close()
        try await d.waitForEvents("nic-disconnect on both after the restart") { evs in
            [taps.a, taps.b].allSatisfy { tap in evs.contains { $0.kind == .nicDisconnect && $0.portName == tap } }
        }
        try await stopPairAndDaemon(d, taps)
    }
}
