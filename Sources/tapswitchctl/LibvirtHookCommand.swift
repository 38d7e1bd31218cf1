import ArgumentParser
import ControlProtocol
import Foundation
import LibvirtHook

/// `tapswitchctl libvirt-hook`: libvirt's QEMU hook (installed as /etc/libvirt/hooks/qemu.d/tapswitch).
///
/// A subcommand of tapswitchctl rather than a script: it reuses the CLI's NIC option parser and
/// validation and its socket client, ships in the same self-contained binary, and its XML mapping
/// is unit-tested with the rest of the Swift code.
struct LibvirtHookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "libvirt-hook",
        abstract: "libvirt QEMU hook: create a domain's tapswitch ports on 'prepare', remove them on 'release'.",
        discussion: """
        libvirt runs /etc/libvirt/hooks/qemu.d/tapswitch DOMAIN OPERATION SUBOPERATION EXTRA with the \
        domain XML on stdin; that script runs this command.

        On 'prepare' it runs 'vm start DOMAIN' with one --nic per interface tapswitch owns (ports left \
        over from an earlier run of the same domain are removed first); if that fails, the hook fails \
        and libvirt does not start the domain. On 'release' it runs 'vm stop DOMAIN'. Every other \
        operation is ignored. Each step is logged to syslog (tag tapswitch-libvirt-hook) and stderr.

        Ownership: an <interface type='ethernet'> is tapswitch's when its <target dev> starts with \
        '\(HookPlan.tapPrefix)', or when the domain's <metadata> holds \
        <switch xmlns='\(LibvirtDomain.namespace)'> with an <interface dev='TAP'> for it. Owned \
        interfaces need <target dev='TAP' managed='no'/> and a <mac address>. Port settings are \
        written in libvirt's syntax inside that metadata <interface> (libvirt refuses them on \
        type='ethernet' interfaces): <vlan><tag id='10'/></vlan> (access VLAN), \
        <vlan trunk='yes'><tag id='10'/><tag id='20' nativeMode='untagged'/></vlan> (trunk), \
        <port isolated='yes'/>; an owner='USER' attribute overrides the TAP owner.

        The TAP owner is the user libvirt runs QEMU as: the domain's DAC <seclabel> label, else \
        'user' in qemu.conf, else libvirt-qemu when that user exists, else root.
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Domain name (libvirt's first hook argument).")
    var domain: String

    @Argument(help: "Operation: prepare, start, started, stopped, release, migrate, restore, reconnect, attach.")
    var operation: String

    @Argument(help: "Sub-operation and extra argument (begin/end, -), as libvirt passes them.")
    var rest: [String] = []

    @Option(name: .customLong("qemu-conf"), help: ArgumentHelp("libvirt's QEMU driver config, read for 'user'.", valueName: "file"))
    var qemuConf = "/etc/libvirt/qemu.conf"

    @Option(help: ArgumentHelp("Seconds each request to tapswitchd may take.", valueName: "seconds"))
    var timeout: Double = 10

    @Option(name: .customLong("log-file"), help: ArgumentHelp(
        "Also append the log lines to this file (default: $TAPSWITCH_HOOK_LOG when set).", valueName: "file"))
    var logFile: String?

    func validate() throws {
        guard timeout > 0, timeout <= 300 else { throw ValidationError("--timeout: \(timeout) is out of range (0, 300]") }
    }

    func run() throws {
        // libvirt writes the XML for every operation; read it all so it never sees a broken pipe.
        let xml = FileHandle.standardInput.readDataToEndOfFile()
        let log = HookLog(domain: domain, operation: operation,
                          file: logFile ?? ProcessInfo.processInfo.environment["TAPSWITCH_HOOK_LOG"])
        switch operation {
        case "prepare": try prepare(xml, log)
        case "release": try release(xml, log)
        default: return
        }
    }

    private func plan(_ xml: Data, _ log: HookLog) throws -> (LibvirtDomain, [HookPlan.OwnedNIC]) {
        do {
            let parsed = try LibvirtDomain.parse(xml)
            let conf = try? String(contentsOfFile: qemuConf, encoding: .utf8)
            var owner = QEMUUser.resolve(dacLabel: parsed.dacLabel, qemuConf: conf)
            if owner == nil, getpwnam("libvirt-qemu") != nil { owner = "libvirt-qemu" }
            return (parsed, try HookPlan.ownedNICs(of: parsed, defaultOwner: owner))
        } catch {
            log.write("refused: \(error)")
            throw CtlFailure(code: CtlExit.usage, message: "libvirt-hook \(domain): \(error)", errorCode: "usage")
        }
    }

    private func prepare(_ xml: Data, _ log: HookLog) throws {
        let (parsed, nics) = try plan(xml, log)
        guard !nics.isEmpty else { return }
        let arguments = nics.flatMap(\.arguments)
        let spec: VMSpec
        do {
            spec = VMSpec(name: try Validate.vmName(parsed.name, field: "domain name"), nics: try NICArguments.parse(arguments))
        } catch {
            log.write("refused: \(error) (options: \(arguments.joined(separator: " ")))")
            throw CtlFailure(code: CtlExit.usage, message: "libvirt-hook \(domain): \(error)", errorCode: "usage")
        }
        if try vmExists(parsed.name, log) {
            _ = try request(.vmStop(name: parsed.name), log, what: "vm stop \(parsed.name) (left over from an earlier run)")
            log.write("removed the ports left over from an earlier run")
        }
        _ = try request(.vmStart(spec), log, what: "vm start \(parsed.name) \(arguments.joined(separator: " "))")
        log.write("vm start \(parsed.name) \(arguments.joined(separator: " ")): ok (\(nics.map { "\($0.dev) by \($0.reason)" }.joined(separator: ", ")))")
    }

    private func release(_ xml: Data, _ log: HookLog) throws {
        let (parsed, nics) = try plan(xml, log)
        guard !nics.isEmpty else { return }
        guard try vmExists(parsed.name, log) else {
            log.write("vm \(parsed.name) has no ports on tapswitch: nothing to remove")
            return
        }
        _ = try request(.vmStop(name: parsed.name), log, what: "vm stop \(parsed.name)")
        log.write("vm stop \(parsed.name): ok")
    }

    private func vmExists(_ name: String, _ log: HookLog) throws -> Bool {
        let snapshot = try request(.show, log, what: "show").snapshot
        return snapshot?.ports.contains { $0.nic?.vmName == name } ?? false
    }

    private func request(_ request: ControlRequest, _ log: HookLog, what: String) throws -> ControlResponse {
        let response: ControlResponse
        do {
            response = try ControlConnection.roundTrip(request, path: globals.socketPath, timeout: timeout)
        } catch {
            log.write("\(what): failed: \(error)")
            throw CtlFailure.unreachable("libvirt-hook \(domain): \(what): \(error)")
        }
        if let error = response.switchError {
            log.write("\(what): refused: \(error.message)")
            var failure = CtlFailure.daemon(error)
            failure.message = "libvirt-hook \(domain): \(what): \(error.message)"
            throw failure
        }
        return response
    }
}

/// The hook's log: syslog (journald on systemd hosts), stderr (libvirt shows it when a hook fails)
/// and optionally a file.
struct HookLog {
    var domain: String
    var operation: String
    var file: String?

    func write(_ message: String) {
        let line = "domain \(domain) \(operation): \(message)"
        line.withCString { text in
            "tapswitch-libvirt-hook".withCString { ident in
                openlog(ident, LOG_PID, LOG_DAEMON)
                withVaList([text]) { vsyslog(LOG_INFO, "%s", $0) }
                closelog()
            }
        }
        FileHandle.standardError.write(Data("tapswitch-libvirt-hook: \(line)\n".utf8))
        if let file, !file.isEmpty {
            let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            guard fd >= 0 else { return }
            let stamped = "\(Wire.formatTimestamp(Date())) \(line)\n"
            _ = stamped.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
        }
    }
}
