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

    @Flag(name: .long, help: "Print JSON instead of tables (events --follow: one JSON object per line).")
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
        version: "0.1.0",
        subcommands: [VMCommand.self, PortCommand.self, ShowCommand.self, FDBCommand.self, EventsCommand.self,
                      ExtensionsCommand.self, VersionCommand.self]
    )

    @OptionGroup var globals: GlobalOptions

    /// Runs the command; maps every failure to one stderr line and the exit codes above.
    static func start() {
        let code: Int32
        do {
            var command = try parseAsRoot()
            try command.run()
            code = CtlExit.success
        } catch let e as CtlFailure {
            printError(e.message)
            code = e.code
        } catch {
            switch exitCode(for: error) {
            case .success:
                // --help, --version.
                print(fullMessage(for: error))
                code = CtlExit.success
            case .validationFailure:
                printError("\(message(for: error)) (see 'tapswitchctl help')")
                code = CtlExit.usage
            default:
                printError(message(for: error))
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
        throw CtlFailure(code: CtlExit.unreachable, message: error.description)
    }
    guard response.ok else { throw CtlFailure(code: CtlExit.daemonError, message: response.error ?? "request failed") }
    return response
}

/// Prints a value as pretty JSON on stdout.
func printJSON<T: Encodable>(_ value: T) {
    let data = (try? Wire.makeEncoder(pretty: true).encode(value)) ?? Data("null".utf8)
    print(String(decoding: data, as: UTF8.self))
}
