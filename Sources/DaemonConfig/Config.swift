import ControlProtocol
import Foundation
import StateStore
import SwitchExtensions

/// The daemon's configuration file, after every check.
///
/// Format: the TOML subset of ``TOMLParser`` with this shape (see `config/tapswitchd.toml`):
/// `[switch]` (name, unknown_unicast, mac_aging_seconds, mac_table_size, mac_limit_per_port, busy_poll_us, offload, transmit),
/// `[control]` (group, nic_hold_report_seconds), `[metrics]` (listen), `[extensions]` (enable), `[[internal]]` (name, mac, netns),
/// `[[external]]` (device), `[[segment]]` (name, vlan, vni, local, underlay, flood, udp_port, learning, evpn, ageing, mtu), `[[vm]]` (name) with `[[vm.nic]]` (tap, mac, owner, group, mtu, type, vlan),
/// `[[mirror]]` (name, source, direction, vlan, to).
/// `[[internal]]`, `[[external]]` and `[[vm.nic]]` also take the port settings keys of ``PortSettings``
/// (`vlan-mode = "trunk"`, `allowed-vlans = "10,20"`, `dhcp-guard = true`, ...).
/// Every key is optional except the names (`vm.name`, `vm.nic.tap`, `internal.name`, `external.device`).
public struct DaemonConfig: Sendable, Equatable {
    public var settings: SwitchSettings
    /// Group allowed to use the control socket (mode 0660); nil means root only.
    public var controlGroup: String?
    /// A `vm stop` / `port remove` whose NIC is still held by references after this long is
    /// reported (log and `nic-held` event naming the holders), and again at doubling intervals.
    public var nicHoldReportSeconds = 30
    /// Where `/metrics` is served (`[metrics] listen`); nil: not served.
    public var metricsListen: ListenAddress? = ListenAddress.defaultMetrics
    /// Enabled extensions, in stack order within each class.
    public var extensions: [String]
    public var internalPorts: [InternalPortSpec]
    public var externalPorts: [ExternalPortSpec]
    /// VXLAN segments (`[[segment]]`).
    public var segments: [SegmentSpec] = []
    public var vms: [VMSpec]
    /// Port mirrors (`[[mirror]]`), applied after the ports and VMs.
    public var mirrors: [MirrorSpec] = []

    public init(settings: SwitchSettings = SwitchSettings(), controlGroup: String? = nil, extensions: [String] = [],
                internalPorts: [InternalPortSpec] = [], externalPorts: [ExternalPortSpec] = [], vms: [VMSpec] = []) {
        self.settings = settings
        self.controlGroup = controlGroup
        self.extensions = extensions
        self.internalPorts = internalPorts
        self.externalPorts = externalPorts
        self.vms = vms
    }

    /// Every VM and port the file declares, in the shape the state store records.
    public var declared: StateRecords {
        StateRecords(vms: vms, internalPorts: internalPorts, externalPorts: externalPorts, segments: segments, mirrors: mirrors)
    }

    /// `[extensions.NAME]` tables: each extension's settings by key, as text.
    public var extensionSettings: [String: [String: String]] = [:]

    /// Extensions enabled when the file has no `[extensions] enable`: every shipped policy, so VM
    /// ports get the safe defaults (MAC spoofing guard) and per-port settings are enforced.
    public static let defaultExtensions = ExtensionRegistry.defaultEnabled

    /// Allowed ranges.
    public static let macAgingRange = 10...1_000_000
    public static let macTableSizeRange = 16...1_000_000
    public static let busyPollRange = 0...1000
    public static let nicHoldReportRange = 1...86_400
}

/// All problems found in a config file, one `file:line: message` per line.
/// At most ``maxIssues`` are kept (a huge broken file must not make one error per entry); `omitted`
/// counts the rest.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var issues: [ConfigIssue]
    /// Problems found beyond ``maxIssues``, not listed.
    public var omitted: Int
    public static let maxIssues = 100

    public init(issues: [ConfigIssue], omitted: Int = 0) {
        self.issues = issues
        self.omitted = omitted
    }

    /// The line saying how many problems are not listed; nil when none are left out.
    public var omittedLine: String? {
        guard omitted > 0, let file = issues.first?.file else { return nil }
        return "\(file): \(omitted) more problem\(omitted == 1 ? "" : "s") not shown (only the first \(Self.maxIssues) are listed)"
    }

    public var description: String { (issues.map(\.description) + [omittedLine].compactMap { $0 }).joined(separator: "\n") }
}

/// Reads a config file into a ``DaemonConfig``, reporting every problem with its line.
public struct ConfigLoader: Sendable {
    /// Extension names the backend offers; nil skips the check.
    public var availableExtensions: Set<String>?
    /// Answers whether a group exists (default: the system group database).
    public var groupExists: @Sendable (String) -> Bool
    /// Checks `[extensions.NAME]` settings with the factory of each extension it knows (a build
    /// with its own extensions passes its registry, so their settings are checked too).
    public var registry: ExtensionRegistry

    public init(availableExtensions: Set<String>? = nil, groupExists: @escaping @Sendable (String) -> Bool = ConfigLoader.systemGroupExists,
                registry: ExtensionRegistry = .builtin) {
        self.availableExtensions = availableExtensions
        self.groupExists = groupExists
        self.registry = registry
    }

    public static let systemGroupExists: @Sendable (String) -> Bool = { name in
        if let gid = UInt32(name) { return getgrgid(gid) != nil }
        return getgrnam(name) != nil
    }

    public func load(path: String) throws(ConfigError) -> DaemonConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot read file (not UTF-8 or no permission)" : "No such file or directory"
            throw ConfigError(issues: [ConfigIssue(file: path, line: 0, message: reason)])
        }
        return try parse(text, file: path)
    }

    public func parse(_ text: String, file: String) throws(ConfigError) -> DaemonConfig {
        let root: TOMLTable
        do {
            root = try TOMLParser.parse(text, file: file)
        } catch {
            throw ConfigError(issues: [error])
        }
        var b = Builder(file: file, loader: self)
        let config = b.build(root)
        if !b.issues.isEmpty { throw ConfigError(issues: b.issues.sorted { $0.line < $1.line }, omitted: b.omitted) }
        return config
    }
}

/// Walks the parsed document, collecting issues instead of stopping at the first.
private struct Builder {
    let file: String
    let loader: ConfigLoader
    var issues: [ConfigIssue] = []
    /// Issues found after the first ``ConfigError/maxIssues``: counted only.
    var omitted = 0

    init(file: String, loader: ConfigLoader) {
        self.file = file
        self.loader = loader
    }

    mutating func issue(_ line: Int, _ message: String) {
        guard issues.count < ConfigError.maxIssues else {
            omitted += 1
            return
        }
        issues.append(ConfigIssue(file: file, line: line, message: message))
    }

    /// Reports keys of `table` that are not in `allowed`.
    mutating func checkKeys(_ table: TOMLTable, allowed: [String], subtables: [String] = []) {
        for key in table.keys where !allowed.contains(key) && !subtables.contains(key) {
            // Values at the top level get their own message ("must be inside a table").
            if table.name.isEmpty, case .value? = table[key] { continue }
            let what: String
            switch table[key] {
            case .table?, .tableArray?: what = "unknown table '\(table.qualified(key))'"
            default: what = "unknown key '\(table.qualified(key))'"
            }
            let known = (allowed + subtables).map { table.qualified($0) }
            issue(table.lineOf(key), "\(what) (known: \(known.joined(separator: ", ")))")
        }
    }

    mutating func value(_ table: TOMLTable, _ key: String) -> TOMLValue? {
        switch table[key] {
        case .value(let v)?: return v
        case nil: return nil
        case .table?, .tableArray?:
            issue(table.lineOf(key), "'\(table.qualified(key))' must be a value, not a table")
            return nil
        }
    }

    mutating func string(_ table: TOMLTable, _ key: String) -> (String, Int)? {
        guard let v = value(table, key) else { return nil }
        guard case .string(let s) = v.kind else {
            issue(v.line, "'\(table.qualified(key))' must be a string, not \(v.typeName)")
            return nil
        }
        return (s, v.line)
    }

    mutating func integer(_ table: TOMLTable, _ key: String) -> (Int, Int)? {
        guard let v = value(table, key) else { return nil }
        guard case .integer(let n) = v.kind else {
            issue(v.line, "'\(table.qualified(key))' must be an integer, not \(v.typeName)")
            return nil
        }
        return (n, v.line)
    }

    mutating func boolean(_ table: TOMLTable, _ key: String) -> (Bool, Int)? {
        guard let v = value(table, key) else { return nil }
        guard case .bool(let b) = v.kind else {
            issue(v.line, "'\(table.qualified(key))' must be a boolean, not \(v.typeName)")
            return nil
        }
        return (b, v.line)
    }

    mutating func stringArray(_ table: TOMLTable, _ key: String) -> ([String], Int)? {
        guard let v = value(table, key) else { return nil }
        guard case .stringArray(let a) = v.kind else {
            issue(v.line, "'\(table.qualified(key))' must be an array of strings, not \(v.typeName)")
            return nil
        }
        return (a, v.line)
    }

    /// Runs a shared validator, turning its error into an issue on `line`.
    /// The port settings keys of `table` (``PortSettings``; `vlan` excepted where the table has its
    /// own), as `key=value` words: strings as written, integers, booleans as on/off, arrays of
    /// strings joined with commas. Each word is checked on its own line, then all together.
    mutating func portSettings(_ table: TOMLTable, except: Set<String> = []) -> [String]? {
        var words: [String] = []
        var lines: [Int] = []
        var ok = true
        for key in PortSettings.keys where !except.contains(key) {
            guard let v = value(table, key) else { continue }
            let text: String
            switch v.kind {
            case .string(let s): text = s
            case .integer(let n): text = String(n)
            case .bool(let b): text = b ? "on" : "off"
            case .stringArray(let a): text = a.joined(separator: ",")
            }
            do throws(SwitchError) {
                _ = try PortSettings.parse(["\(key)=\(text)"].filter { _ in !["vlan-mode", "allowed-vlans", "native-vlan"].contains(key) })
            } catch {
                issue(v.line, "\(table.qualified(key)): \(error.message)")
                ok = false
            }
            words.append("\(key)=\(text)")
            lines.append(v.line)
        }
        guard ok else { return nil }
        do throws(SwitchError) {
            return try PortSettings.parse(words).assignments
        } catch {
            issue(lines.last ?? table.line, "\(table.name): \(error.message)")
            return nil
        }
    }

    /// `[extensions.NAME]`: the extension's settings, each value as text (integers as written,
    /// booleans as on/off). Unknown extensions, unknown keys and bad values are reported on their line.
    mutating func extensionSettings(_ t: TOMLTable, _ name: String) -> [String: String]? {
        if let avail = loader.availableExtensions, !avail.contains(name) {
            issue(t.line, "[extensions.\(name)]: unknown extension '\(name)' (available: \(avail.sorted().joined(separator: ", ")))")
            return nil
        }
        let entry = loader.registry.entry(named: name)
        var out: [String: String] = [:]
        var ok = true
        for key in t.keys {
            guard let v = value(t, key) else { ok = false; continue }
            let text: String
            switch v.kind {
            case .string(let s): text = s
            case .integer(let n): text = String(n)
            case .bool(let b): text = b ? "on" : "off"
            case .stringArray(let a): text = a.joined(separator: ",")
            }
            if let entry {
                do throws(SwitchError) { _ = try entry.make(ExtensionSettings([key: text])) } catch {
                    issue(v.line, "\(t.qualified(key)): \(error.message)")
                    ok = false
                }
            }
            out[key] = text
        }
        return ok ? out : nil
    }

    mutating func check<T>(_ line: Int, _ body: () throws(FieldError) -> T) -> T? {
        do {
            return try body()
        } catch {
            issue(line, error.description)
            return nil
        }
    }

    mutating func table(_ root: TOMLTable, _ key: String) -> TOMLTable? {
        switch root[key] {
        case .table(let t)?: return t
        case nil: return nil
        case .tableArray(let ts)?:
            issue(ts[0].line, "'\(key)' is a single table: write [\(key)], not [[\(key)]]")
            return nil
        case .value(let v)?:
            issue(v.line, "'\(key)' must be a [\(key)] table, not a value")
            return nil
        }
    }

    mutating func tables(_ parent: TOMLTable, _ key: String) -> [TOMLTable] {
        let q = parent.qualified(key)
        switch parent[key] {
        case .tableArray(let ts)?: return ts
        case nil: return []
        case .table(let t)?:
            issue(t.line, "'\(q)' is an array of tables: write [[\(q)]], not [\(q)]")
            return []
        case .value(let v)?:
            issue(v.line, "'\(q)' must be written as [[\(q)]] tables, not a value")
            return []
        }
    }

    mutating func build(_ root: TOMLTable) -> DaemonConfig {
        var config = DaemonConfig(extensions: DaemonConfig.defaultExtensions)
        for key in root.keys {
            if case .value(let v)? = root[key] {
                issue(v.line, "key '\(key)' must be inside a table such as [switch]")
            }
        }
        checkKeys(root, allowed: [], subtables: ["switch", "control", "metrics", "extensions", "internal", "external", "segment", "vm", "mirror"])

        if let t = table(root, "switch") { config.settings = buildSwitch(t) }
        if let t = table(root, "control") {
            checkKeys(t, allowed: ["group", "nic_hold_report_seconds"])
            if let (n, line) = integer(t, "nic_hold_report_seconds") {
                if DaemonConfig.nicHoldReportRange.contains(n) { config.nicHoldReportSeconds = n } else {
                    issue(line, "control.nic_hold_report_seconds: \(n) is out of range \(DaemonConfig.nicHoldReportRange.lowerBound)..\(DaemonConfig.nicHoldReportRange.upperBound)")
                }
            }
            if let (g, line) = string(t, "group"), !g.isEmpty {
                if let g = check(line, { () throws(FieldError) in try Validate.principal(g, field: "control.group", what: "group") }) {
                    if loader.groupExists(g) {
                        config.controlGroup = g
                    } else {
                        issue(line, "control.group: group '\(g)' does not exist")
                    }
                }
            }
        }
        if let t = table(root, "metrics") {
            checkKeys(t, allowed: ["listen"])
            if let (text, line) = string(t, "listen") {
                if text.isEmpty {
                    config.metricsListen = nil
                } else if let a = check(line, { () throws(FieldError) in try ListenAddress(parsing: text, field: "metrics.listen") }) {
                    config.metricsListen = a
                }
            }
        }
        if let t = table(root, "extensions") {
            let named = t.keys.filter { if case .table? = t[$0] { true } else { false } }
            checkKeys(t, allowed: ["enable"], subtables: named)
            for name in named {
                guard let st = table(t, name) else { continue }
                if let settings = extensionSettings(st, name) { config.extensionSettings[name] = settings }
            }
            if let (names, line) = stringArray(t, "enable") {
                var seen = Set<String>()
                for n in names {
                    if !seen.insert(n).inserted { issue(line, "extensions.enable: '\(n)' is listed twice") }
                    if let avail = loader.availableExtensions, !avail.contains(n) {
                        issue(line, "extensions.enable: unknown extension '\(n)' (available: \(avail.sorted().joined(separator: ", ")))")
                    }
                }
                config.extensions = names
            }
        }
        // Interface names and MACs must be unique across the whole file.
        var names: [String: Int] = [config.settings.name: root.lineOf("switch")]
        var macs: [MACAddress: Int] = [:]
        func claimName(_ b: inout Builder, _ n: String, _ line: Int) {
            if let first = names[n] { b.issue(line, "interface name '\(n)' is already used (line \(first))") } else { names[n] = line }
        }
        func claimMAC(_ b: inout Builder, _ m: MACAddress, _ line: Int) {
            if let first = macs[m] { b.issue(line, "MAC \(m) is already used (line \(first))") } else { macs[m] = line }
        }

        for t in tables(root, "internal") {
            checkKeys(t, allowed: ["name", "mac", "netns"] + PortSettings.keys)
            guard let (name, nline) = string(t, "name") else {
                if t["name"] == nil { issue(t.line, "[[internal]] needs a name") }
                continue
            }
            guard let name = check(nline, { () throws(FieldError) in try Validate.interfaceName(name, field: "internal.name") }) else { continue }
            var spec = InternalPortSpec(name: name)
            if let (m, line) = string(t, "mac"), let mac = check(line, { () throws(FieldError) in try Validate.mac(m, field: "internal.mac") }) {
                spec.mac = mac
                claimMAC(&self, mac, line)
            }
            if let (ns, line) = string(t, "netns") {
                spec.netns = check(line, { () throws(FieldError) in try Validate.netnsName(ns, field: "internal.netns") })
            }
            guard let settings = portSettings(t) else { continue }
            spec.settings = settings
            claimName(&self, name, nline)
            config.internalPorts.append(spec)
        }

        // Several uplinks, each with its own VLAN policy (trunk or access).
        for t in tables(root, "external") {
            checkKeys(t, allowed: ["device"] + PortSettings.keys)
            guard let (dev, line) = string(t, "device") else {
                if t["device"] == nil { issue(t.line, "[[external]] needs a device") }
                continue
            }
            guard let dev = check(line, { () throws(FieldError) in try Validate.interfaceName(dev, field: "external.device") }) else { continue }
            claimName(&self, dev, line)
            guard let settings = portSettings(t) else { continue }
            config.externalPorts.append(ExternalPortSpec(device: dev, settings: settings))
        }

        var vlans: [Int: Int] = [:], vnis: [Int: Int] = [:]
        for t in tables(root, "segment") {
            checkKeys(t, allowed: ["name", "vlan", "vni", "local", "underlay", "flood", "udp_port", "learning", "evpn", "ageing", "mtu"])
            for key in ["name", "vlan", "vni", "local", "underlay"] where t[key] == nil { issue(t.line, "[[segment]] needs \(key)") }
            guard let (name, nline) = string(t, "name"), let (vlan, vline) = integer(t, "vlan"), let (vni, vniLine) = integer(t, "vni"),
                  let (local, _) = string(t, "local"), let (underlay, _) = string(t, "underlay") else { continue }
            var spec = SegmentSpec(name: name, vlan: vlan, vni: vni, local: local, underlay: underlay)
            if let (f, _) = stringArray(t, "flood") { spec.flood = f }
            if let (p, _) = integer(t, "udp_port") { spec.udpPort = p }
            if let (l, _) = boolean(t, "learning") { spec.learning = l }
            if let (e, _) = boolean(t, "evpn") { spec.evpn = e }
            if spec.evpn { spec.learning = false }
            if let (a, _) = integer(t, "ageing") { spec.ageing = a }
            if let (m, _) = integer(t, "mtu") { spec.mtu = m }
            guard let valid = check(t.line, { () throws(FieldError) in try spec.validated(prefix: "segment") }) else { continue }
            if let first = vlans[vlan] { issue(vline, "segment.vlan: VLAN \(vlan) already has a segment (line \(first))") } else { vlans[vlan] = vline }
            if let first = vnis[vni] { issue(vniLine, "segment.vni: VNI \(vni) is already used (line \(first))") } else { vnis[vni] = vniLine }
            claimName(&self, name, nline)
            config.segments.append(valid)
        }

        var vmNames: [String: Int] = [:]
        for t in tables(root, "vm") {
            checkKeys(t, allowed: ["name"], subtables: ["nic"])
            let vmName: String?
            if let (n, line) = string(t, "name") {
                vmName = check(line, { () throws(FieldError) in try Validate.vmName(n, field: "vm.name") })
                if let vmName {
                    if let first = vmNames[vmName] { issue(line, "VM '\(vmName)' is declared twice (first at line \(first))") }
                    vmNames[vmName] = line
                }
            } else {
                if t["name"] == nil { issue(t.line, "[[vm]] needs a name") }
                vmName = nil
            }
            let nicTables = tables(t, "nic")
            if nicTables.isEmpty { issue(t.line, "VM '\(vmName ?? "?")' has no [[vm.nic]]") }
            if nicTables.count > VMSpec.maxNICs { issue(t.line, "VM '\(vmName ?? "?")' has \(nicTables.count) NICs; the limit is \(VMSpec.maxNICs)") }
            var nics: [NICSpec] = []
            for nt in nicTables {
                if let nic = buildNIC(nt, claimName: { b, n, l in claimName(&b, n, l) }, claimMAC: { b, m, l in claimMAC(&b, m, l) }) {
                    nics.append(nic)
                }
            }
            if let vmName, nics.count == nicTables.count, !nics.isEmpty { config.vms.append(VMSpec(name: vmName, nics: nics)) }
        }

        var mirrorNames: [String: Int] = [:]
        for t in tables(root, "mirror") {
            checkKeys(t, allowed: ["name", "source", "direction", "vlan", "to"])
            for key in ["name", "source", "to"] where t[key] == nil { issue(t.line, "[[mirror]] needs \(key)") }
            // One source may be written as a plain string.
            var sources: [String]?
            var sourceLine = t.line
            if case .value(let v)? = t["source"], case .string(let one) = v.kind {
                sources = [one]
                sourceLine = v.line
            } else if let (list, line) = stringArray(t, "source") {
                sources = list
                sourceLine = line
            }
            guard let (name, nline) = string(t, "name"), let sources, let (to, toLine) = string(t, "to") else { continue }
            var spec = MirrorSpec(name: name, source: sources, to: to)
            var line = t.line
            if let (d, dline) = string(t, "direction") {
                guard let direction = MirrorSpec.Direction(rawValue: d) else {
                    issue(dline, "mirror.direction: '\(d)' is not in, out or both")
                    continue
                }
                spec.direction = direction
            }
            if let (v, vline) = integer(t, "vlan") {
                spec.vlan = v
                line = vline
            }
            do throws(FieldError) { try spec.validate(field: { "mirror.\($0)" }) } catch {
                // Reported at the line of the key that is wrong.
                let lines = ["mirror.name": nline, "mirror.source": sourceLine, "mirror.to": toLine, "mirror.vlan": line]
                issue(lines[error.field] ?? t.line, error.description)
                continue
            }
            if let first = mirrorNames[name] { issue(nline, "mirror '\(name)' is declared twice (first at line \(first))"); continue }
            mirrorNames[name] = nline
            config.mirrors.append(spec)
        }
        return config
    }

    mutating func buildSwitch(_ t: TOMLTable) -> SwitchSettings {
        checkKeys(t, allowed: ["name", "unknown_unicast", "mac_aging_seconds", "mac_table_size", "mac_limit_per_port", "busy_poll_us", "offload", "transmit"])
        var s = SwitchSettings()
        if let (n, line) = string(t, "name"), let n = check(line, { () throws(FieldError) in try Validate.interfaceName(n, field: "switch.name") }) {
            s.name = n
        }
        if let (u, line) = string(t, "unknown_unicast") {
            if let p = UnknownUnicastPolicy(rawValue: u) { s.unknownUnicast = p } else {
                issue(line, "switch.unknown_unicast: '\(u)' is not one of: \(UnknownUnicastPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        if let (n, line) = integer(t, "mac_aging_seconds") {
            if DaemonConfig.macAgingRange.contains(n) { s.macAgingSeconds = n } else {
                issue(line, "switch.mac_aging_seconds: \(n) is out of range \(DaemonConfig.macAgingRange.lowerBound)..\(DaemonConfig.macAgingRange.upperBound)")
            }
        }
        if let (n, line) = integer(t, "mac_table_size") {
            if DaemonConfig.macTableSizeRange.contains(n) { s.macTableSize = n } else {
                issue(line, "switch.mac_table_size: \(n) is out of range \(DaemonConfig.macTableSizeRange.lowerBound)..\(DaemonConfig.macTableSizeRange.upperBound)")
            }
        }
        if let (n, line) = integer(t, "mac_limit_per_port") {
            if (1...s.macTableSize).contains(n) { s.macLimitPerPort = n } else {
                issue(line, "switch.mac_limit_per_port: \(n) is out of range 1..\(s.macTableSize) (mac_table_size)")
            }
        } else if s.macLimitPerPort > s.macTableSize {
            s.macLimitPerPort = s.macTableSize
        }
        if let (n, line) = integer(t, "busy_poll_us") {
            if DaemonConfig.busyPollRange.contains(n) { s.busyPollMicroseconds = n } else {
                issue(line, "switch.busy_poll_us: \(n) is out of range \(DaemonConfig.busyPollRange.lowerBound)..\(DaemonConfig.busyPollRange.upperBound)")
            }
        }
        if let (o, line) = string(t, "offload") {
            if let m = OffloadMode(rawValue: o) { s.offload = m } else {
                issue(line, "switch.offload: '\(o)' is not one of: \(OffloadMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        if let (v, line) = string(t, "transmit") {
            if let p = TransmitPath(rawValue: v) { s.transmit = p } else {
                issue(line, "switch.transmit: '\(v)' is not one of: \(TransmitPath.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        return s
    }

    mutating func buildNIC(_ t: TOMLTable, claimName: (inout Builder, String, Int) -> Void,
                           claimMAC: (inout Builder, MACAddress, Int) -> Void) -> NICSpec? {
        checkKeys(t, allowed: ["tap", "mac", "owner", "group", "mtu", "type"] + PortSettings.keys)
        guard let (tap, tline) = string(t, "tap") else {
            if t["tap"] == nil { issue(t.line, "[[vm.nic]] needs a tap") }
            return nil
        }
        guard let tap = check(tline, { () throws(FieldError) in try Validate.interfaceName(tap, field: "vm.nic.tap") }) else { return nil }
        claimName(&self, tap, tline)
        var nic = NICSpec(tap: tap)
        var ok = true
        if let (m, line) = string(t, "mac") {
            if let mac = check(line, { () throws(FieldError) in try Validate.mac(m, field: "vm.nic.mac") }) {
                nic.mac = mac
                claimMAC(&self, mac, line)
            } else { ok = false }
        }
        if let (o, line) = string(t, "owner") {
            nic.owner = check(line, { () throws(FieldError) in try Validate.principal(o, field: "vm.nic.owner", what: "user") })
            ok = ok && nic.owner != nil
        }
        if let (g, line) = string(t, "group") {
            nic.group = check(line, { () throws(FieldError) in try Validate.principal(g, field: "vm.nic.group", what: "group") })
            ok = ok && nic.group != nil
        }
        if let (m, line) = integer(t, "mtu") {
            nic.mtu = check(line, { () throws(FieldError) in try Validate.mtu(m, field: "vm.nic.mtu") })
            ok = ok && nic.mtu != nil
        }
        if let (v, line) = integer(t, "vlan") {
            nic.vlan = check(line, { () throws(FieldError) in try Validate.vlan(v, field: "vm.nic.vlan") })
            ok = ok && nic.vlan != nil
        }
        if let (ty, line) = string(t, "type") {
            if let ty = check(line, { () throws(FieldError) in try Validate.nicType(ty, field: "vm.nic.type") }) { nic.type = ty } else { ok = false }
        }
        if let settings = portSettings(t, except: ["vlan"]) {
            nic.settings = settings
            // `vlan = N` and a trunk (or untagged) setting cannot both hold.
            do throws(SwitchError) { nic.record(try nic.portSettings()) } catch {
                issue(t.line, "[[vm.nic]] \(tap): \(error.message)")
                ok = false
            }
        } else {
            ok = false
        }
        return ok ? nic : nil
    }
}
