import ArgumentParser
import ControlProtocol
import Dispatch
import Foundation
import Pcapng
#if canImport(Glibc)
import Glibc
#endif

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture ports' frames live, as pcapng (tcpdump, tshark and Wireshark read it).",
        discussion: """
        Records the frames the switch receives from each PORT (direction in) and delivers to it \
        (out, in the bytes the port receives, VLAN tag pushed or popped), with nanosecond \
        timestamps, one pcapng interface per port and direction (named PORT-in, PORT-out). Runs \
        until interrupted (Ctrl-C) or COUNT frames, then prints a summary on stderr.

        With --drops, the frames the switch dropped at those ports are added, each with a packet \
        comment "dropped: REASON, by EXTENSION" (or "by switch") and a drop verdict; frames \
        dropped on arrival (malformed, VLAN not allowed) go to PORT-in.

        Capture never slows the switch: frames are copied into a ring the daemon drains; if this \
        command (or the program reading its output) is too slow, capture frames are lost, counted \
        in the summary and in the pcapng interface statistics, never switch frames. This is also \
        the way to see both directions at full speed: tcpdump -i TAP sees only what the VM sends.

        Examples:
          tapswitchctl capture web1-0 -w - | tcpdump -nr -
          tapswitchctl capture web1-0 web2-0 --direction in -c 100 -w /tmp/web.pcapng
          tapswitchctl capture web1-0 --drops -w - | tshark -r - -V
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "The ports to capture (TAP, internal or uplink names).", completion: .custom(Completions.portNames))
    var ports: [String]

    @Option(name: .long, help: "in (from the port), out (to the port) or both.")
    var direction: String = "both"

    @Option(name: .customShort("c"), help: "Stop after COUNT frames.")
    var count: Int?

    @Option(name: .long, help: "Bytes kept of each frame (default \(CaptureRequest.defaultSnaplen), the whole frame).")
    var snaplen: Int = CaptureRequest.defaultSnaplen

    @Flag(name: .long, help: "Add the frames the switch dropped at these ports, with reason and dropping extension.")
    var drops = false

    @Option(name: .customShort("w"), help: ArgumentHelp( "Write pcapng to FILE, or to standard output with '-' (the default; refused on a terminal).",
                                                        valueName: "file"), completion: .file())
    var file: String = "-"

    func validate() throws {
        guard let d = CaptureRequest.Directions(rawValue: direction) else {
            throw ValidationError("--direction: '\(direction)' is not in, out or both")
        }
        do { try request(d).validate() } catch {
            let flag = ["ports": "PORT", "count": "-c", "snaplen": "--snaplen"][error.field] ?? error.field
            throw usage(error.renamed(flag))
        }
        if file == "-" && isatty(1) == 1 {
            throw ValidationError("-w: refusing to write pcapng to a terminal; give -w FILE, or pipe it: -w - | tcpdump -r -")
        }
    }

    func request(_ d: CaptureRequest.Directions) -> CaptureRequest {
        CaptureRequest(ports: ports, direction: d, count: count, snaplen: snaplen, drops: drops)
    }

    func run() throws {
        let out: FileHandle
        if file == "-" {
            out = .standardOutput
        } else {
            guard let h = OutputFile.open(file) else {
                throw CtlFailure(code: CtlExit.daemonError, message: "-w: cannot create \(file): \(errnoText())", errorCode: "system")
            }
            out = h
        }
        signal(SIGPIPE, SIG_IGN)
        let connection: ControlConnection
        do {
            connection = try ControlConnection(path: globals.socketPath, timeout: nil)
            try connection.send(.capture(request(CaptureRequest.Directions(rawValue: direction)!)))
        } catch {
            throw CtlFailure.unreachable(error.description)
        }
        let response: ControlResponse?
        do { response = try connection.readResponse() } catch { throw CtlFailure.unreachable(error.description) }
        guard let response else { throw CtlFailure.unreachable("tapswitchd closed the connection without answering") }
        if let error = response.switchError { throw CtlFailure.daemon(error) }

        // Ctrl-C (or SIGTERM) asks the daemon to finish: it sends what it has and the statistics.
        let fd = connection.socketDescriptor
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { _ = shutdown(fd, Int32(SHUT_WR)) }
            s.resume()
            sources.append(s)
        }
        defer { for s in sources { s.cancel() } }

        var reader = Pcapng.StreamReader()
        var frames = 0
        var dropped = 0
        var lost: UInt64 = 0
        var outputGone = false
        while true {
            let chunk: [UInt8]?
            do { chunk = try connection.readBytes() } catch { throw CtlFailure.unreachable(error.description) }
            guard let chunk else { break }
            if !outputGone {
                do { try out.write(contentsOf: chunk) } catch {
                    // The reader went away (tcpdump -c ...): end the capture cleanly.
                    outputGone = true
                    connection.shutdownWrite()
                }
            }
            let blocks: [Pcapng.Block]
            do { blocks = try reader.feed(chunk) } catch { throw CtlFailure.unreachable(error.description) }
            for b in blocks {
                if let p = b.packet {
                    frames += 1
                    if p.dropped { dropped += 1 }
                } else if let s = b.statistics {
                    lost += s.dropped
                }
            }
        }
        if file != "-" { try? out.close() }
        var summary = "\(frames) frame\(frames == 1 ? "" : "s") captured"
        if drops { summary += " (\(dropped) dropped by the switch)" }
        summary += ", \(lost) lost by the capture (reader too slow)"
        printError(summary)
    }
}
