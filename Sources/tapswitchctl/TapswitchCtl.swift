import ArgumentParser
import ControlProtocol
import Foundation

/// Exit codes of `tapswitchctl`.
enum CtlExit {
    static let success: Int32 = 0
    /// The daemon refused the request (`{"ok": false}`): bad VM name, veto, no such port...
    static let daemonError: Int32 = 1
    /// Bad command line.
    static let usage: Int32 = 2
    /// The daemon could not be reached, or the connection broke.
    static let unreachable: Int32 = 3
}

/// `--socket` and `--json`, accepted before or after the subcommand.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Control socket of tapswitchd.",
        discussion: "Default: $\(Wire.socketEnvironmentVariable) when set, else \(Wire.defaultSocketPath).",
        valueName: "path"))
    var socket: String?

    @Flag(name: .long, help: ArgumentHelp(
        "Print JSON instead of tables (events --follow: one JSON object per line).",
        discussion: "Every output is an object with a \"version\" field (schema: docs/json.md); errors too, on stdout: {\"error\": {\"code\", \"message\", \"exitCode\"}}."))
    var json = false

    var socketPath: String {
        if let socket { return socket }
        if let env = ProcessInfo.processInfo.environment[Wire.socketEnvironmentVariable], !env.isEmpty { return env }
        return Wire.defaultSocketPath
    }

    func validate() throws {
        if let socket, socket.isEmpty { throw ValidationError("--socket: must not be empty") }
    }
}

struct TapswitchCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tapswitchctl",
        abstract: "Control tapswitchd: start and stop VMs' switch ports, add host ports, inspect the switch.",
        discussion: """
        Talks to tapswitchd over its control socket (newline-delimited JSON). --socket and --json may \
        be given before or after the subcommand.

        Exit codes: 0 success; 1 the daemon refused the request (the reason is printed on stderr, \
        e.g. a veto by an extension); 2 bad command line; 3 the daemon is not reachable \
        ("cannot connect to tapswitchd at PATH: ...") or the connection broke.
        """,
        version: TapswitchVersion.current,
        subcommands: [VMCommand.self, PortCommand.self, NICCommand.self, ACLCommand.self, SegmentCommand.self, MirrorCommand.self, ExtensionCommand.self, ShowCommand.self, DropsCommand.self, TopCommand.self, FDBCommand.self, EventsCommand.self, CaptureCommand.self,
                      ExtensionsCommand.self, VersionCommand.self, LibvirtHookCommand.self]
    )

    @OptionGroup var globals: GlobalOptions

    /// Runs the command; maps every failure to one stderr line and the exit codes above.
    static func start() {
        let code: Int32
        if let problem = CommandSuggestion.check(Array(CommandLine.arguments.dropFirst()), root: TapswitchCtl.self) {
            report(CtlFailure(code: CtlExit.usage, message: "\(problem) (see 'tapswitchctl help')", errorCode: "usage"))
            Foundation.exit(CtlExit.usage)
        }
        do {
            var command = try parseAsRoot()
            try command.run()
            code = CtlExit.success
        } catch let e as CtlFailure {
            report(e)
            code = e.code
        } catch {
            switch exitCode(for: error) {
            case .success:
                // --help, --version.
                print(fullMessage(for: error))
                code = CtlExit.success
            case .validationFailure:
                report(CtlFailure(code: CtlExit.usage, message: "\(message(for: error)) (see 'tapswitchctl help')", errorCode: "usage"))
                code = CtlExit.usage
            default:
                report(CtlFailure(code: exitCode(for: error).rawValue, message: message(for: error), errorCode: "usage"))
                code = exitCode(for: error).rawValue
            }
        }
        Foundation.exit(code)
    }
}

/// A failure with its exit code, raised by the subcommands.
struct CtlFailure: Error {
    var code: Int32
    var message: String
    /// The `code` of the JSON error: the daemon's ``SwitchError/Code`` wire name, `usage` or `unreachable`.
    var errorCode: String
    var vetoingExtension: String?
    var vetoReason: String?

    /// The daemon could not be reached or the connection broke.
    static func unreachable(_ message: String) -> CtlFailure {
        CtlFailure(code: CtlExit.unreachable, message: message, errorCode: "unreachable")
    }

    /// The daemon refused the request: its error, code and veto as it sent them.
    static func daemon(_ error: SwitchError) -> CtlFailure {
        CtlFailure(code: CtlExit.daemonError, message: error.message, errorCode: error.code.rawValue,
                   vetoingExtension: error.vetoingExtension, vetoReason: error.vetoReason)
    }

    /// The daemon answered `ok` without the payload the request calls for.
    static func missing(_ what: String) -> CtlFailure {
        daemon(SwitchError(.system, "the daemon sent no \(what)"))
    }
}

/// One failure, as a stderr line, or with `--json` as a JSON error document on stdout.
func report(_ failure: CtlFailure) {
    if JSONOutput.requested {
        let body = JSONOutput.ErrorBody(code: failure.errorCode, message: failure.message, exitCode: failure.code,
                                        vetoingExtension: failure.vetoingExtension, vetoReason: failure.vetoReason)
        print(String(decoding: JSONOutput.error(body), as: UTF8.self))
    } else {
        printError(failure.message)
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data("tapswitchctl: \(text)\n".utf8))
}

/// Turns a bad value into a usage error naming the flag.
func usage(_ error: FieldError) -> ValidationError { ValidationError(error.description) }

/// Sends one request and returns the successful response, or throws a ``CtlFailure``.
func call(_ request: ControlRequest, _ globals: GlobalOptions) throws -> ControlResponse {
    let response: ControlResponse
    do {
        response = try ControlConnection.roundTrip(request, path: globals.socketPath)
    } catch {
        throw CtlFailure.unreachable(error.description)
    }
    if let error = response.switchError { throw CtlFailure.daemon(error) }
    return response
}
