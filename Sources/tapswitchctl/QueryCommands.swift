import ArgumentParser
import ControlProtocol
import Foundation

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show the switch, its ports, NICs and counters.",
        discussion: """
        First line: the switch and its settings (transmit=bypass: sends skip the qdisc, so \
        `tcpdump -i TAP` sees only what the VM sends; transmit=qdisc: it sees both directions of \
        slow-path frames; [switch] transmit). Then one row per port: ID, NAME, TYPE (external, \
        internal, synthetic, emulated), VM, NIC state (created, connected, disconnected; "-" for \
        host ports), MAC (the one in use, else the assigned one), MTU, VLAN (the access VLAN, \
        "trunk:10,20+native1" for a trunk, "-" when the port has no VLAN policy), frames and bytes IN \
        (from the port into the switch) and OUT, and DROPS; drop reasons follow the table, each with \
        its reporter in brackets (the extension, a core stage such as core:admission, or device). \
        Last, each port's path: "fast path (xdp)" when its learned unicast flows may take the XDP \
        fast path ([switch] offload), with the entries cached from and to the port and the frames \
        the fast path forwarded in and out, else "slow path:" and why (offload off, not a VM TAP, \
        EXTENSION: reason for an extension that must see every frame). Counters include fast-path frames. \
        Then each port mirror with its copies and copy drops, which are not counted as any port's.
        With --interval N: samples twice, N seconds apart, and prints per-port rates instead: \
        RX-FPS/RX-BPS (frames and bits per second from the port), TX-FPS/TX-BPS (to the port), \
        DROPS/S and the TOP-DROP of the interval. Rates stay right across a daemon restart.
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Option(help: "Print rates over this many seconds (0.1..3600) instead of counters.")
    var interval: Double?

    func validate() throws {
        if let interval, !(0.1...3600).contains(interval) { throw ValidationError("--interval \(interval) is out of range 0.1..3600") }
    }

    func run() throws {
        guard let first = try call(.show, globals).snapshot else { throw CtlFailure.missing("snapshot") }
        guard let interval else { return try printCounters(first) }
        let t0 = Date()
        pause(seconds: interval)
        guard let s = try call(.show, globals).snapshot else { throw CtlFailure.missing("snapshot") }
        let rates = PortRates.between(first, s, seconds: Date().timeIntervalSince(t0))
        if globals.json {
            printJSON(rates, key: "rates")
            return
        }
        print(formatSwitchLine(s) + "  interval=\(interval)s")
        let rows = [["PORT", "VM", "RX-FPS", "RX-BPS", "TX-FPS", "TX-BPS", "DROPS/S", "TOP-DROP"]]
            + rates.map { [$0.name, $0.vm, PortRates.human($0.framesInPerSecond), PortRates.human($0.bitsInPerSecond),
                           PortRates.human($0.framesOutPerSecond), PortRates.human($0.bitsOutPerSecond), PortRates.human($0.dropsPerSecond), $0.topDrop] }
        printTable(rows, numeric: [2, 3, 4, 5, 6])
    }

    private func printCounters(_ s: SwitchSnapshot) throws {
        if globals.json {
            printJSON(s)
            return
        }
        print(formatSwitchLine(s))
        if s.ports.isEmpty {
            print("no ports")
            return
        }
        var rows = [["ID", "NAME", "TYPE", "VM", "NIC", "MAC", "MTU", "VLAN", "FRAMES-IN", "BYTES-IN", "FRAMES-OUT", "BYTES-OUT", "DROPS"]]
        for p in s.ports {
            let mac = p.nic.map { ($0.currentMAC ?? $0.assignedMAC).description } ?? p.mac?.description ?? "-"
            let vlan = formatVLAN(p.vlanPolicy)
            rows.append([p.id.description, p.name, p.type.rawValue, p.nic?.vmName ?? "-", p.nic?.state.rawValue ?? "-", mac,
                         p.nic.map { String($0.mtu) } ?? "-", vlan,
                         String(p.counters.framesIn), String(p.counters.bytesIn), String(p.counters.framesOut),
                         String(p.counters.bytesOut), String(p.counters.totalDrops)])
        }
        printTable(rows, numeric: [0, 6, 7, 8, 9, 10, 11, 12])
        for p in s.ports where !p.counters.drops.isEmpty {
            let detail = p.counters.drops.sorted { $0.key < $1.key }.map { "\($0.key.direction) \($0.key.reason) [\($0.key.reporter)]=\($0.value)" }
                .joined(separator: ", ")
            print("drops on \(p.name): \(detail)")
        }
        for p in s.ports {
            if let path = p.offload { print("path of \(p.name): \(path)") }
        }
        // Copies are not the ports' frames or drops: counted per mirror.
        for m in s.mirrors ?? [] {
            print("mirror \(m.mirror.name) to \(m.mirror.to): \(mirrorState(m)), copies \(m.frames) (\(m.bytes) bytes), copy drops \(m.drops)")
        }
    }
}

/// The VLAN column: the access VLAN (`10`), `trunk:10,20` (or `trunk:all`) with `+native N` when
/// untagged frames belong to a VLAN (`+native untagged`: to the untagged ports' segment),
/// `untagged`, or `-` for the port type's default (untagged only; the uplink: every VLAN).
func formatVLAN(_ policy: VLANPolicy?) -> String {
    switch policy {
    case nil: "-"
    case .untagged: "untagged"
    case .access(let id): String(id)
    case .trunk(let allowed, let native):
        "trunk:" + (allowed.isEmpty ? "none" : PortSettings.formatVLANs(allowed))
            + (native.map { $0 == 0 ? "+native untagged" : "+native\($0)" } ?? "")
    }
}

func formatSwitchLine(_ s: SwitchSnapshot) -> String {
    let st = s.settings
    return "switch \(st.name)  unknown-unicast=\(st.unknownUnicast.rawValue)  mac-aging=\(st.macAgingSeconds)s  "
        + "mac-table=\(s.fdbEntries)/\(st.macTableSize)  mac-limit-per-port=\(st.macLimitPerPort)  busy-poll=\(st.busyPollMicroseconds)us  transmit=\(st.transmit.rawValue)  ports=\(s.ports.count)  "
        + "uptime=\(Int(s.uptimeSeconds))s"
}

struct FDBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fdb",
        abstract: "Show the MAC table (forwarding database).",
        discussion: "Columns: MAC, VLAN (\"-\" untagged), PORT id, NAME, AGE in seconds since the MAC was last seen. Entries are learned from traffic and expire after [switch] mac_aging_seconds."
    )

    @OptionGroup var globals: GlobalOptions

    func run() throws {
        let entries = try call(.fdb, globals).fdb ?? []
        if globals.json {
            printJSON(entries, key: "fdb")
            return
        }
        var rows = [["MAC", "VLAN", "PORT", "NAME", "AGE"]]
        for e in entries {
            rows.append([e.mac.description, e.vlan.map(String.init) ?? "-", e.portId.description, e.portName,
                         e.isStatic ? "static" : String(e.ageSeconds)])
        }
        printTable(rows, numeric: [1, 2, 4])
        if entries.isEmpty { print("(empty)") }
    }
}

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Show lifecycle events (the last 1000), optionally following new ones.",
        discussion: """
        One event per line: SEQ TIME KIND port=ID name=PORT [nic=N] [vm=VM] [DETAIL] [restore]. \
        KIND is one of: \(EventKind.allCases.map(\.rawValue).joined(separator: ", ")). \
        "restore" marks events replayed while the daemon re-adopted ports after a restart. \
        For veto events DETAIL is "extension: reason".
        With --follow, keeps printing events as they happen until interrupted; with --json, \
        prints one JSON object per event per line. A follower survives daemon restarts: it \
        reconnects (saying so on stderr) and resumes after the last event it printed, so no event \
        is missed or printed twice; it gives up (exit 3) when the daemon is not back within \
        --reconnect-timeout seconds (default 60; 0 exits when the stream ends). Event numbers continue across restarts (kept in the state \
        directory); after a crash they may skip ahead, never repeat. --after SEQ prints only events \
        numbered above SEQ (with --follow: resume from there).
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Flag(name: [.long, .short], help: "Keep printing new events until interrupted (reconnects across daemon restarts).")
    var follow = false

    @Option(help: ArgumentHelp("Only events numbered above SEQ.", valueName: "SEQ"))
    var after: UInt64?

    @Option(help: ArgumentHelp("With --follow: how long to keep reconnecting after the stream ends, in seconds (0: exit at once).", valueName: "SECONDS"))
    var reconnectTimeout: Double = 60

    func validate() throws {
        guard reconnectTimeout >= 0, reconnectTimeout <= 86_400 else {
            throw ValidationError("--reconnect-timeout must be between 0 and 86400 seconds, got \(reconnectTimeout)")
        }
    }

    func run() throws {
        if !follow {
            let events = try call(.events(follow: false, after: after), globals).events ?? []
            if globals.json {
                printJSON(events, key: "events")
            } else {
                for e in events { print(formatEvent(e)) }
            }
            return
        }
        // Written straight to fd 1 (not through print's buffer) so a pipe sees each event at once.
        var last = after
        func emit(_ e: SwitchEvent) {
            // A resumed stream starts after `last`; the check also keeps a duplicate from ever printing.
            if let l = last, e.seq <= l { return }
            last = e.seq
            var line = globals.json ? JSONOutput.object(e, pretty: false) : Data(formatEvent(e).utf8)
            line.append(0x0A)
            FileHandle.standardOutput.write(line)
        }
        func note(_ text: String) {
            FileHandle.standardError.write(Data("tapswitchctl events: \(text)\n".utf8))
        }
        var connectedOnce = false
        var lost: String?
        var lostAt = ContinuousClock.now
        while true {
            let connection: ControlConnection
            do {
                connection = try ControlConnection(path: globals.socketPath, timeout: nil)
                try connection.send(.events(follow: true, after: last))
            } catch {
                // Not there at the start: fail as every command does. Gone later: it is restarting.
                guard connectedOnce else { throw CtlFailure.unreachable(error.description) }
                if ContinuousClock.now - lostAt > .milliseconds(Int64(reconnectTimeout * 1000)) {
                    throw CtlFailure.unreachable("\(lost ?? error.description); not back within \(reconnectTimeout) s")
                }
                pause(seconds: 0.2)
                continue
            }
            if connectedOnce, lost != nil { note("reconnected; resuming after event \(last.map(String.init) ?? "none")") }
            connectedOnce = true
            lost = nil
            let reason = readStream(connection, emit)
            connection.close()
            if case .failed(let error) = reason { throw CtlFailure.daemon(error) }
            if case .ended(let why) = reason {
                if reconnectTimeout == 0 { throw CtlFailure.unreachable(why) }
                note("\(why); reconnecting")
                lost = why
                lostAt = .now
            }
        }
    }

    private enum StreamEnd {
        case ended(String)
        case failed(SwitchError)
    }

    /// Reads one connection's event stream until it ends.
    private func readStream(_ connection: ControlConnection, _ emit: (SwitchEvent) -> Void) -> StreamEnd {
        while true {
            let response: ControlResponse?
            do {
                response = try connection.readResponse()
            } catch {
                return .ended("event stream lost: \(error.description)")
            }
            guard let response else { return .ended("tapswitchd closed the event stream") }
            if let error = response.switchError { return .failed(error) }
            for e in response.events ?? [] { emit(e) }
            if let e = response.event { emit(e) }
        }
    }
}

func formatEvent(_ e: SwitchEvent) -> String {
    var parts = [String(e.seq), Wire.formatTimestamp(e.time), e.kind.rawValue, "port=\(e.portId)", "name=\(e.portName)"]
    if let n = e.nicIndex { parts.append("nic=\(n)") }
    if let v = e.vmName { parts.append("vm=\(v)") }
    if let d = e.detail { parts.append(d) }
    if e.restore { parts.append("restore") }
    return parts.joined(separator: " ")
}

struct ExtensionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extensions",
        abstract: "List the switch extensions, their class, whether enabled, their stack position and counters.",
        discussion: """
        POSITION is the order within the class on ingress (0 first); enable extensions in the config's \
        [extensions] enable list. The counters of each enabled extension (name=value) follow the table.
        """
    )

    @OptionGroup var globals: GlobalOptions

    func run() throws {
        let list = try call(.extensions, globals).extensions ?? []
        if globals.json {
            printJSON(list, key: "extensions")
            return
        }
        var rows = [["NAME", "CLASS", "ENABLED", "POSITION", "SUMMARY"]]
        for x in list {
            rows.append([x.name, x.extensionClass.rawValue, x.enabled ? "yes" : "no", x.position.map(String.init) ?? "-", x.summary ?? ""])
        }
        printTable(rows, numeric: [3])
        for x in list where !x.counters.isEmpty {
            print("counters of \(x.name): " + x.counters.map { "\($0.name)=\($0.value)" }.joined(separator: " "))
        }
    }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version",
        abstract: "Show the versions of tapswitchctl and of the running daemon (also a liveness check)."
    )

    @OptionGroup var globals: GlobalOptions

    func run() throws {
        guard let v = try call(.version, globals).version else { throw CtlFailure.missing("version") }
        if globals.json {
            printJSON(v)
        } else {
            print("tapswitchctl \(TapswitchCtl.configuration.version)")
            print("tapswitchd \(v.daemon) (pid \(v.pid), protocol \(v.protocolVersion), backend \(v.backend))")
        }
    }
}
