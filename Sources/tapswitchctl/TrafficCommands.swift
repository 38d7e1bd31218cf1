import ArgumentParser
import ControlProtocol
import Foundation

struct DropsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drops",
        abstract: "List dropped frames by port, direction, reason and reporter; optionally follow new ones.",
        discussion: """
        Columns: PORT, DIRECTION (ingress: the port sent the frame; egress: it was for the port), \
        REASON, REPORTER (the extension that dropped or excluded it, a core stage: core:admission \
        for parsing, VLAN and source checks, core:forwarding for the learning forwarder, \
        core:delivery for transmit; or device for the kernel, such as a full receive ring) and \
        FRAMES since the daemon started. "(switch)" rows are frames the switch itself sent; "(mirror \
        NAME)" rows are a port mirror's copies that its destination had no room for (not that port's drops). \
        A broadcast or unknown unicast that found no other port is not a drop.
        With --follow, prints a line whenever a counter rises (checked every --interval seconds): \
        TIME PORT DIRECTION REASON [REPORTER] +NEW total=N; it keeps going across daemon restarts. \
        With --json, a list, or with --follow one JSON object per line.
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Only these ports (default: all).")
    var ports: [String] = []

    @Flag(name: [.long, .short], help: "Keep printing drops as they happen until interrupted.")
    var follow = false

    @Option(help: "Seconds between checks with --follow (0.1..3600).")
    var interval: Double = 1

    func validate() throws {
        guard (0.1...3600).contains(interval) else { throw ValidationError("--interval \(interval) is out of range 0.1..3600") }
    }

    func run() throws {
        let filter = Set(ports)
        guard follow else {
            guard let s = try call(.show, globals).snapshot else { throw CtlFailure.missing("snapshot") }
            let unknown = ports.filter { p in !s.ports.contains { $0.name == p } }
            if !unknown.isEmpty { throw CtlFailure.daemon(SwitchError(.notFound, "no port named \(unknown.joined(separator: ", "))")) }
            let rows = DropRow.rows(s, ports: filter)
            if globals.json {
                printJSON(rows, key: "drops")
                return
            }
            if rows.isEmpty {
                print("no drops")
                return
            }
            printTable([["PORT", "DIRECTION", "REASON", "REPORTER", "FRAMES"]] + rows.map { [$0.port, $0.direction, $0.reason, $0.reporter, String($0.frames)] },
                       numeric: [4])
            return
        }
        var last: [String: UInt64] = [:]
        var start: Double?? = .none
        var unreachable = false
        while true {
            let s: SwitchSnapshot
            do {
                guard let snap = try call(.show, globals).snapshot else { throw CtlFailure.missing("snapshot") }
                s = snap
                if unreachable { note("reconnected") }
                unreachable = false
            } catch let failure as CtlFailure where failure.code == CtlExit.unreachable {
                // The daemon is restarting: keep trying, say so once.
                if !unreachable { note("daemon unreachable, retrying: \(failure.message)") }
                unreachable = true
                pause(seconds: interval)
                continue
            }
            if case .some(let previous) = start, previous != s.startTime {
                note("daemon restarted; counting from its start")
                last = [:]
            }
            let first = start == nil
            start = .some(s.startTime)
            let now = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            for var r in DropRow.rows(s, ports: filter) {
                let before = last[r.key] ?? 0
                last[r.key] = r.frames
                if first || r.frames <= before { continue }
                r.delta = r.frames - before
                r.time = now
                var line = globals.json ? JSONOutput.object(r, pretty: false)
                    : Data("\(now) \(r.port) \(r.direction) \(r.reason) [\(r.reporter)] +\(r.delta!) total=\(r.frames)".utf8)
                line.append(0x0A)
                FileHandle.standardOutput.write(line)
            }
            pause(seconds: interval)
        }
    }

    private func note(_ text: String) {
        FileHandle.standardError.write(Data("tapswitchctl drops: \(text)\n".utf8))
    }
}
