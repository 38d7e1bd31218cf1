import ArgumentParser
import ControlProtocol
import DaemonConfig
import Foundation
import LinuxNet
import ServiceSupport
import SwitchExtensions
import SwitchService
import Locking

/// `tapswitchd`'s command line: parses it and hands over to ``Daemon``. The executables call
/// ``start(registry:makeBackend:)`` with the extensions they offer and the backend they run on
/// (`tapswitchd` and builds with their own extensions, through `TapswitchKit`: the data plane on
/// the host's devices; the test daemon: the same backend on in-memory devices).
public struct TapswitchD: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tapswitchd",
        abstract: "User-space virtual switch daemon for KVM hosts (Hyper-V switch model over TAPs).",
        discussion: """
        Reads the config, re-adopts the ports and VMs recorded in the state directory by the previous \
        run, starts the VMs and ports the config declares that are not running yet, binds the control \
        socket, then tells systemd READY=1.

        Signals: SIGHUP re-reads the config (a bad file is logged and the previous config kept; changed \
        switch settings are applied and newly declared VMs and ports started; running ports are not \
        touched). SIGTERM/SIGINT stop the daemon WITHOUT removing TAPs or disturbing VMs, so a restart \
        re-adopts them. SIGUSR2 restarts it in place without losing frames (systemctl kill -s USR2 \
        tapswitchd, or kill -USR2 PID): it executes its binary again (the same PID; new code after an \
        upgrade) and hands the ports' sockets and internal ports' queues to the new image, which \
        forwards what the VMs sent meanwhile. Under systemd the sockets also live in the unit's \
        file-descriptor store, so systemctl restart and a crash restart keep them too.

        Exit codes: 0 success, 1 start-up failure (socket, state file, backend), 2 bad command line, \
        78 invalid config (printed as FILE:LINE: what is wrong, before any device is touched).
        """,
        version: TapswitchVersion.current
    )

    @Option(name: .long, help: ArgumentHelp(
        "Config file.",
        discussion: "Default: config/tapswitchd.toml when that file exists in the current directory (running from the repository), else /etc/tapswitch/tapswitchd.toml.",
        valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Control socket path.", valueName: "path"))
    var socket: String = Wire.defaultSocketPath

    @Option(name: .customLong("state-dir"), help: ArgumentHelp("Directory for the VM/port records (state.json).", valueName: "dir"))
    var stateDir: String = DaemonOptions.defaultStateDirectory

    @Option(name: .customLong("log-level"), help: ArgumentHelp(
        "Minimum log level: \(LogLevelName.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "level"))
    var logLevel: String = "info"

    @Flag(name: .customLong("check-config"), help: "Validate the config file, print a summary and exit (0 valid, 78 invalid).")
    var checkConfig = false

    @Option(name: .customLong("request-timeout"), help: ArgumentHelp(
        "Seconds a control client has to send its request line.", valueName: "seconds"))
    var requestTimeout: Double = 5

    @Option(name: .customLong("shutdown-timeout"), help: ArgumentHelp(
        "Seconds SIGTERM/SIGINT may take to stop the daemon; then it exits anyway with status 1.", valueName: "seconds"))
    var shutdownTimeout: Double = 10

    public init() {}

    public func validate() throws {
        guard LogLevelName(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level: '\(logLevel)' is not one of: \(LogLevelName.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard requestTimeout > 0, requestTimeout <= 3600 else {
            throw ValidationError("--request-timeout: \(requestTimeout) is out of range (0, 3600]")
        }
        guard shutdownTimeout > 0, shutdownTimeout <= 3600 else {
            throw ValidationError("--shutdown-timeout: \(shutdownTimeout) is out of range (0, 3600]")
        }
        if socket.isEmpty { throw ValidationError("--socket: must not be empty") }
        if stateDir.isEmpty { throw ValidationError("--state-dir: must not be empty") }
    }

    public func run() async throws {
        try await run(registry: .builtin, makeBackend: { DataPlaneBackend() })
    }

    func run(registry: ExtensionRegistry, makeBackend: @escaping @Sendable () -> any SwitchBackend) async throws {
        var options = DaemonOptions(
            configPath: config ?? DaemonOptions.defaultConfigPath(),
            socketPath: socket,
            stateDirectory: stateDir,
            logLevel: LogLevelName(rawValue: logLevel) ?? .info,
            checkConfigOnly: checkConfig,
            requestTimeout: requestTimeout,
            shutdownTimeout: shutdownTimeout)
        options.capabilities = Self.capabilities.withLock { $0 }
        options.processStart = Self.mainStart.withLock { $0 }
        let daemon = Daemon(options: options, registry: registry, makeBackend: makeBackend)
        // The daemon's async work runs on its own threads, never waiting for the cooperative pool.
        let code = await withTaskExecutorPreference(DaemonExecutor.shared) { await daemon.run() }
        if code != 0 { throw ExitCode(code) }
    }

    /// What ``limitCapabilities()`` did, for the daemon to log.
    static let capabilities = Locked<CapabilityReport?>(nil)
    /// When ``limitCapabilities()`` ran: the start of `main`, for the start-up figures.
    static let mainStart = Locked<ContinuousClock.Instant?>(nil)

    /// Keeps only the capabilities the daemon needs (``DaemonPrivileges``), deciding about
    /// `CAP_CHOWN` from the config's `[control] group`. Runs on the main thread before any other
    /// thread exists, so every later thread inherits the reduced sets. A command line or config
    /// that does not parse keeps the minimum: the daemon exits on it anyway.
    public static func limitCapabilities() {
        mainStart.withLock { $0 = ContinuousClock.now }
        // First, before any thread: takes the sockets a previous run handed over out of the environment.
        SocketHandOver.process.takeInherited()
        guard let command = try? parseAsRoot() as? TapswitchD, !command.checkConfig else { return }
        let path = command.config ?? DaemonOptions.defaultConfigPath()
        let loaded = try? ConfigLoader().load(path: path)
        let report = DaemonPrivileges.limit(controlGroup: loaded?.controlGroup, offload: (loaded?.settings.offload ?? .xdp) == .xdp)
        capabilities.withLock { $0 = report }
    }

    /// Parses the command line and runs the daemon on `makeBackend`'s backend. Bad command lines
    /// exit 2 with one line on stderr instead of ArgumentParser's 64 and usage block.
    /// - Parameter registry: the extensions the backend offers (config settings are checked with
    ///   their factories); the shipped ones by default.
    public static func start(registry: ExtensionRegistry = .builtin, makeBackend: @escaping @Sendable () -> any SwitchBackend) async {
        do {
            let command = try parseAsRoot()
            if let daemon = command as? TapswitchD {
                try await daemon.run(registry: registry, makeBackend: makeBackend)
            } else if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                var command = command
                try command.run()
            }
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data("tapswitchd: \(message(for: error)) (see 'tapswitchd --help')\n".utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
