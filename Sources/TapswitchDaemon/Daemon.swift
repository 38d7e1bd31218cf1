import ControlProtocol
import ControlServer
import DaemonConfig
import Foundation
import LinuxNet
import Logging
import MetricsExporter
import ServiceSupport
import StateStore
import SwitchExtensions
import SwitchService
#if canImport(Glibc)
import Glibc
#endif

/// Command-line options of `tapswitchd`, already validated.
public struct DaemonOptions: Sendable {
    public var configPath: String
    public var socketPath: String
    public var stateDirectory: String
    public var logLevel: LogLevelName
    /// Validate the config and exit.
    public var checkConfigOnly: Bool
    /// Seconds a control client has to send its request line.
    public var requestTimeout: Double
    /// Seconds SIGTERM/SIGINT may take to stop; then the process exits anyway (status 1).
    public var shutdownTimeout: Double
    /// What the executable did to the process's capabilities at start-up (logged); nil if nothing.
    public var capabilities: CapabilityReport?
    /// When `main` began (for the start-up figures in the `ready` line); nil: when ``Daemon/run()`` began.
    public var processStart: ContinuousClock.Instant?

    public init(configPath: String, socketPath: String = Wire.defaultSocketPath, stateDirectory: String = DaemonOptions.defaultStateDirectory,
                logLevel: LogLevelName = .info, checkConfigOnly: Bool = false, requestTimeout: Double = 5, shutdownTimeout: Double = 10) {
        self.configPath = configPath
        self.socketPath = socketPath
        self.stateDirectory = stateDirectory
        self.logLevel = logLevel
        self.checkConfigOnly = checkConfigOnly
        self.requestTimeout = requestTimeout
        self.shutdownTimeout = shutdownTimeout
    }

    public static let defaultStateDirectory = "/var/lib/tapswitch"
    public static let installedConfigPath = "/etc/tapswitch/tapswitchd.toml"
    public static let repositoryConfigPath = "config/tapswitchd.toml"

    /// `config/tapswitchd.toml` when run from the repository (the file exists relative to the
    /// current directory), else `/etc/tapswitch/tapswitchd.toml`.
    public static func defaultConfigPath(fileExists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> String {
        fileExists(repositoryConfigPath) ? repositoryConfigPath : installedConfigPath
    }
}

/// Process exit codes of `tapswitchd`.
public enum DaemonExitCode {
    public static let success: Int32 = 0
    /// Start-up failed (socket, state file, backend).
    public static let failure: Int32 = 1
    /// The config file is invalid (EX_CONFIG; the unit's RestartPreventExitStatus stops restart loops).
    public static let badConfig: Int32 = 78
}

/// The daemon's life: config, backend, adoption of the previous run's ports, declared VMs, control
/// socket, READY, then signals until SIGTERM/SIGINT.
///
/// Order matters: a bad config exits before any device is touched; READY=1 is sent only after
/// ports are re-adopted and the socket is bound; stopping never touches TAPs or VMs, so a restart
/// does not disturb running guests.
public struct Daemon: Sendable {
    public let options: DaemonOptions
    private let makeBackend: @Sendable () -> any SwitchBackend
    private let registry: ExtensionRegistry

    /// - Parameters:
    ///   - registry: the extensions this build offers; the config's `[extensions.NAME]` settings
    ///     are checked with their factories.
    ///   - makeBackend: creates the switch; must not touch devices (see ``SwitchBackend``).
    public init(options: DaemonOptions, registry: ExtensionRegistry = .builtin,
                makeBackend: @escaping @Sendable () -> any SwitchBackend) {
        self.options = options
        self.registry = registry
        self.makeBackend = makeBackend
    }

    private static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    /// Runs until SIGTERM or SIGINT; returns the process exit code.
    public func run() async -> Int32 {
        DaemonLogging.bootstrap(level: options.logLevel.level)
        var logger = Logger(label: "tapswitchd")
        logger.logLevel = options.logLevel.level

        let backend = makeBackend()
        let loader = ConfigLoader(availableExtensions: Set(backend.availableExtensions().map(\.name)), registry: registry)
        var config: DaemonConfig
        do {
            config = try loader.load(path: options.configPath)
        } catch {
            Self.printError(error.description)
            return DaemonExitCode.badConfig
        }
        if options.checkConfigOnly {
            print("\(options.configPath): OK (switch \(config.settings.name), \(config.vms.count) VMs, "
                + "\(config.internalPorts.count) internal and \(config.externalPorts.count) external ports, "
                + "extensions: \(config.extensions.isEmpty ? "none" : config.extensions.joined(separator: ", ")))")
            return DaemonExitCode.success
        }

        let startClock = ContinuousClock.now
        // Where a start's time goes, for the `ready` line (scripts/bench-restart reads it).
        var phases = StartupPhases(start: options.processStart ?? startClock)
        phases.mark("config")
        // Ports opened from now on keep their receive socket for the next run (systemd's store or re-exec).
        let handOver = SocketHandOver.process
        handOver.enable(environment: ProcessInfo.processInfo.environment)
        // Before any slow step, so a SIGTERM during start-up is not lost.
        let signals = SignalEvents()
        defer { signals.cancel() }
        let notifier = SystemdNotifier()
        notifier.status("starting")
        logger.notice("starting", metadata: ["version": "\(TapswitchVersion.current)", "backend": "\(backend.kind)",
                                             "config": "\(options.configPath)"])
        if let caps = options.capabilities {
            if let problem = caps.problem {
                logger.warning("could not limit capabilities", metadata: ["error": "\(problem)", "kept": "\(caps.kept)"])
            } else {
                logger.info("capabilities limited", metadata: ["kept": "\(caps.kept)"])
            }
            if config.controlGroup != nil, !caps.kept.contains(.chown) {
                logger.info("no CAP_CHOWN: the control socket gets its group only if the daemon is a member of it (SupplementaryGroups=)")
            }
        }

        do {
            for (name, settings) in config.extensionSettings.sorted(by: { $0.key < $1.key }) {
                try await backend.setExtensionSettings(named: name, settings)
            }
            // The XDP program is loaded after re-adoption: a restart forwards first (slow path).
            try await backend.configure(config.settings, extensions: config.extensions, offloadLater: true)
        } catch {
            Self.printError("tapswitchd: cannot create switch '\(config.settings.name)': \(error.message)")
            return DaemonExitCode.failure
        }
        await backend.setNICHoldReport(seconds: Double(config.nicHoldReportSeconds))
        phases.mark("switch")
        let events = await backend.subscribeEvents()
        let eventLog = Task(executorPreference: DaemonExecutor.shared) { [logger] in
            for await e in events.live {
                logger.info("\(e.kind.rawValue)", metadata: eventMetadata(e))
            }
        }
        defer {
            events.cancel()
            eventLog.cancel()
        }

        let store = StateStore(directory: options.stateDirectory)
        let recorded: StateRecords
        let intent: Intent?
        do {
            try store.prepare()
            await backend.setMarkerIdentity(try store.switchID())
            // Event numbers go on from the previous run's (followers resume by number).
            try await backend.continueEventNumbering(from: store.nextEventNumber()) { n in try store.saveNextEventNumber(n) }
            let recovery = try store.loadRecovering()
            recorded = recovery.records
            if let aside = recovery.setAside {
                // Loud: the previous run's records were damaged; the kernel's marked TAPs fill the gaps.
                let message = "state file was damaged: moved it aside and started with what could be recovered; "
                    + "TAPs this switch marked whose records were lost are adopted from their markers (see the lines that follow)"
                logger.critical("\(message)", metadata: [
                    "damaged": "\(aside)", "reason": "\(recovery.damage ?? "")", "recovered-vms": "\(recorded.vms.count)",
                    "recovered-ports": "\(recorded.internalPorts.count + recorded.externalPorts.count)", "lost-entries": "\(recovery.lostEntries)",
                ])
                // The recovered records replace the damaged file at once, so a crash now loses nothing more.
                try store.save(recorded)
            }
            let loaded = try store.loadIntent()
            intent = loaded.intent
            if let damage = loaded.damage { logger.critical("\(damage); its step is resolved from the TAPs' markers") }
        } catch {
            Self.printError("tapswitchd: \(error.message)")
            await backend.shutdown()
            return DaemonExitCode.failure
        }
        phases.mark("state")
        let service = ControlService(backend: backend, store: store, records: recorded, logger: logger)
        await service.watchLostPorts()
        await service.noteExtensionSettings(config.extensionSettings)
        // Before re-adoption: finish or undo what a crash interrupted, so the records match the kernel.
        let recovery = await service.recoverInterrupted(intent: intent)
        for line in recovery.actions { logger.warning("crash recovery: \(line)") }
        for line in recovery.problems { logger.error("crash recovery: \(line)") }
        let inherited = handOver.unadopted
        phases.mark("recovery")
        let adoptStart = ContinuousClock.now
        let outcome = await service.adoptRecorded()
        let adoptTime = ContinuousClock.now - adoptStart
        // The re-adopted ports are read from here on.
        phases.mark("adoption")
        let forwardingAt = phases.elapsed
        let leftOver = handOver.closeUnadopted()
        if !inherited.isEmpty {
            logger.notice("took over receive sockets from the previous run", metadata: [
                "sockets": "\(inherited.count - leftOver.count)", "closed-unused": "\(leftOver.joined(separator: ","))",
                "via": "\(handOver.inheritedSource)",
            ])
        }
        for f in outcome.failures {
            logger.error("could not re-adopt recorded port", metadata: ["what": "\(f.what)", "error": "\(f.reason)"])
        }
        if !(await service.recorded).isEmpty {
            logger.notice("re-adopted ports from the previous run", metadata: [
                "vms": "\(outcome.adopted.vms.count)", "internal": "\(outcome.adopted.internalPorts.count)",
                "external": "\(outcome.adopted.externalPorts.count)", "failed": "\(outcome.failures.count)",
            ])
        }
        _ = await backend.startOffload()
        phases.mark("offload")
        for line in await service.applyDeclared(config) {
            logger.error("could not start declared port or VM", metadata: ["error": "\(line)"])
        }
        phases.mark("declared")

        var serverOptions = ControlServer.Options(path: options.socketPath, group: config.controlGroup)
        serverOptions.requestTimeout = options.requestTimeout
        let server: ControlServer
        do {
            server = try ControlServer(options: serverOptions, service: service, logger: logger)
        } catch {
            Self.printError("tapswitchd: \(error.message)")
            await backend.shutdown()
            return DaemonExitCode.failure
        }
        let restarts = Self.countStart(stateDirectory: options.stateDirectory, logger: logger)
        let metrics = MetricsEndpoint(backend: backend, requests: server.requestMetrics, restarts: restarts, logger: logger)
        metrics.apply(config.metricsListen)
        defer { metrics.apply(nil) }
        if let heartbeat = notifier.makeHeartbeat() {
            await backend.startHeartbeat(heartbeat)
            logger.info("watchdog enabled", metadata: ["interval": "\(notifier.watchdogInterval.map { "\($0)" } ?? "")"])
        }
        phases.mark("control")
        notifier.ready(status: await statusLine(service))
        logger.notice("ready", metadata: [
            "socket": "\(options.socketPath)", "startup-ms": "\(Self.milliseconds(ContinuousClock.now - startClock))",
            "adoption-ms": "\(Self.milliseconds(adoptTime))", "fd-store": "\(handOver.usesSystemdStore)",
            "since-main-ms": "\(Self.milliseconds(phases.elapsed))", "forwarding-ms": "\(Self.milliseconds(forwardingAt))",
            "phases-ms": "\(phases.description)",
        ])

        for await signal in signals.stream {
            switch signal {
            case .terminate(let sig):
                logger.notice("stopping (leaving TAPs and VMs in place)", metadata: ["signal": "\(sig == SIGTERM ? "SIGTERM" : "SIGINT")"])
                notifier.stopping(status: "stopping")
                // Closing ports now keeps their sockets in systemd's store for the next start.
                handOver.freeze()
                await stop(server: server, service: service, backend: backend, logger: logger)
                return DaemonExitCode.success
            case .restart:
                logger.notice("restarting in place: handing the ports' receive sockets to the new process image",
                              metadata: ["sockets": "\(handOver.keptNames.count)"])
                notifier.reloading()
                handOver.freeze()
                await stop(server: server, service: service, backend: backend, logger: logger)
                logger.info("executing the new process image")
                let error = handOver.execSelf(arguments: CommandLine.arguments)
                logger.critical("restart failed; exiting (TAPs and VMs stay)", metadata: ["error": "\(error)"])
                return DaemonExitCode.failure
            case .reload:
                config = await reload(current: config, loader: loader, service: service, server: server, notifier: notifier, logger: logger)
                metrics.apply(config.metricsListen)
            }
        }
        await stop(server: server, service: service, backend: backend, logger: logger)
        return DaemonExitCode.success
    }

    /// Stops the server and the switch within ``DaemonOptions/shutdownTimeout``, else exits anyway:
    /// a wedged packet loop or extension must not keep a stopping daemon (and systemd) waiting.
    private func stop(server: ControlServer, service: ControlService, backend: any SwitchBackend, logger: Logger) async {
        let timeout = options.shutdownTimeout
        let deadline = ShutdownDeadline(seconds: timeout) { [logger] in
            logger.critical("shutdown did not finish within \(timeout) s; exiting anyway (TAPs and VMs stay)")
            exit(DaemonExitCode.failure)
        }
        server.stop()
        // NIC save: extensions' per-NIC state survives the restart (handed back on re-adoption).
        await service.saveNICStates()
        await backend.shutdown()
        deadline.disarm()
    }

    /// SIGHUP: re-read the config; on error keep the old one. Applies switch settings and starts
    /// VMs and ports that the new file declares and the old one did not; running ports stay as they are.
    private func reload(current: DaemonConfig, loader: ConfigLoader, service: ControlService, server: ControlServer,
                        notifier: SystemdNotifier, logger: Logger) async -> DaemonConfig {
        notifier.reloading()
        let new: DaemonConfig
        do {
            new = try loader.load(path: options.configPath)
        } catch {
            for issue in error.issues { logger.error("reload: config error, keeping the previous config", metadata: ["issue": "\(issue)"]) }
            if let more = error.omittedLine { logger.error("reload: config error, keeping the previous config", metadata: ["issue": "\(more)"]) }
            notifier.ready(status: "reload failed: \(error.issues.first?.description ?? "config error"); running with the previous config")
            return current
        }
        if new.settings != current.settings || new.extensions != current.extensions || new.extensionSettings != current.extensionSettings {
            do {
                try await service.reconfigure(new)
            } catch {
                logger.error("reload: cannot apply switch settings", metadata: ["error": "\(error.message)"])
            }
        }
        if new.nicHoldReportSeconds != current.nicHoldReportSeconds {
            await service.backend.setNICHoldReport(seconds: Double(new.nicHoldReportSeconds))
        }
        if new.controlGroup != current.controlGroup {
            do {
                try server.setGroup(new.controlGroup)
            } catch {
                logger.error("reload: cannot change the control socket group", metadata: ["error": "\(error.message)"])
            }
        }
        for line in await service.applyDeclared(new, skipping: current.declared) {
            logger.error("reload: could not start declared port or VM", metadata: ["error": "\(line)"])
        }
        logger.notice("config reloaded", metadata: ["config": "\(options.configPath)"])
        notifier.ready(status: await statusLine(service))
        return new
    }

    /// Counts this start in the state directory (`daemon-starts`) and returns how many came before:
    /// `tapswitch_daemon_restarts_total`. A missing or unreadable file counts as none.
    static func countStart(stateDirectory: String, logger: Logger) -> UInt64 {
        let path = stateDirectory + "/daemon-starts"
        let before = (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        do {
            try "\(before + 1)\n".write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            logger.warning("cannot record the daemon start count", metadata: ["path": "\(path)", "error": "\(error.localizedDescription)"])
        }
        return before
    }

    static func milliseconds(_ d: Duration) -> String {
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        return String(format: "%.1f", ms)
    }

    private func statusLine(_ service: ControlService) async -> String {
        let r = await service.recorded
        return "\(r.vms.count) VMs, \(r.internalPorts.count + r.externalPorts.count) host ports"
    }
}

private func eventMetadata(_ e: SwitchEvent) -> Logger.Metadata {
    // port is the name (journal field PORT=, as operators know it); port-id the switch's number.
    var m: Logger.Metadata = ["seq": "\(e.seq)", "event": "\(e.kind.rawValue)", "port": "\(e.portName)", "port-id": "\(e.portId)"]
    if let n = e.nicIndex { m["nic"] = "\(n)" }
    if let v = e.vmName { m["vm"] = "\(v)" }
    if let d = e.detail { m["detail"] = "\(d)" }
    if e.restore { m["restore"] = "true" }
    return m
}

/// The steps of a daemon start and how long each took, from `main` on: `config` (runtime start-up,
/// command line, config), `switch`, `state`, `recovery`, `adoption` (forwarding starts after it),
/// `offload`, `declared`, `control` (socket, metrics, watchdog).
struct StartupPhases: CustomStringConvertible {
    private var last: ContinuousClock.Instant
    private let start: ContinuousClock.Instant
    private var steps: [(String, Duration)] = []

    init(start: ContinuousClock.Instant) {
        self.start = start
        last = start
    }

    /// The step `name` ends now.
    mutating func mark(_ name: String) {
        let now = ContinuousClock.now
        steps.append((name, now - last))
        last = now
    }

    /// Since `main`.
    var elapsed: Duration { last - start }

    /// `config=12.0,switch=3.1,...` (ms).
    var description: String { steps.map { "\($0.0)=\(Daemon.milliseconds($0.1))" }.joined(separator: ",") }
}
