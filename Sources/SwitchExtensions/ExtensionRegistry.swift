import SwitchCore

/// Settings given to an extension's factory (`[extensions.NAME]` in the config, `tapswitchctl
/// extension set`): text values by key. The factory reads the keys it knows and rejects the rest.
public struct ExtensionSettings: Sendable, Equatable {
    public var values: [String: String]
    public init(_ values: [String: String] = [:]) { self.values = values }

    /// Refuses keys not in `known`, naming the first unknown one.
    public func check(extension name: String, known: [String]) throws(SwitchError) {
        for key in values.keys.sorted() where !known.contains(key) {
            let hint = known.isEmpty ? "it takes no settings" : "settings: \(known.joined(separator: ", "))"
            throw SwitchError(.invalidArgument, "extension \(name): unknown setting '\(key)' (\(hint))")
        }
    }

    public func flag(_ key: String, extension name: String, default value: Bool) throws(SwitchError) -> Bool {
        guard let text = values[key] else { return value }
        switch text {
        case "on", "true": return true
        case "off", "false": return false
        default: throw SwitchError(.invalidArgument, "extension \(name): \(key)=\(text): expected on or off")
        }
    }

    /// A number in `range`, or nil for `none` (or when absent and `value` is nil).
    public func limit(_ key: String, extension name: String, range: ClosedRange<Int>, default value: Int?) throws(SwitchError) -> Int? {
        guard let text = values[key] else { return value }
        if text == "none" { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw SwitchError(.invalidArgument, "extension \(name): \(key)=\(text): expected a number \(range.lowerBound)-\(range.upperBound) or none")
        }
        return n
    }
}

/// The extensions a tapswitchd build offers: name, class, summary, the settings each takes, and a
/// factory that builds one from its settings (refusing unknown or invalid ones).
public struct ExtensionRegistry: Sendable {
    public struct Setting: Sendable, Equatable {
        public let key: String
        public let summary: String
        public init(_ key: String, _ summary: String) {
            self.key = key
            self.summary = summary
        }
    }

    public struct Entry: Sendable {
        public let name: String
        public let extensionClass: ExtensionClass
        public let summary: String
        public let settings: [Setting]
        /// Builds the extension. Cheap (tables are allocated when it is enabled), so callers may
        /// build one just to check settings.
        public let make: @Sendable (ExtensionSettings) throws(SwitchError) -> any SwitchExtension

        public init(name: String, extensionClass: ExtensionClass, summary: String, settings: [Setting] = [],
                    make: @escaping @Sendable (ExtensionSettings) throws(SwitchError) -> any SwitchExtension) {
            self.name = name
            self.extensionClass = extensionClass
            self.summary = summary
            self.settings = settings
            self.make = make
        }
    }

    public private(set) var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    public func entry(named name: String) -> Entry? { entries.first { $0.name == name } }
    public var names: [String] { entries.map(\.name) }

    /// Adds an extension (one built outside this package, say). Names are unique.
    public mutating func register(_ entry: Entry) throws(SwitchError) {
        guard self.entry(named: entry.name) == nil else { throw SwitchError(.exists, "extension \(entry.name) is already registered") }
        entries.append(entry)
    }

    /// Builds `name` from `settings`.
    public func make(_ name: String, settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) -> any SwitchExtension {
        guard let e = entry(named: name) else {
            throw SwitchError(.notFound, "unknown extension '\(name)' (available: \(names.joined(separator: ", ")))")
        }
        return try e.make(settings)
    }

    /// The shipped extensions.
    public static let builtin = ExtensionRegistry(entries: [
        Entry(name: DuplicateMACGuard.extensionName, extensionClass: .filtering,
              summary: "vetoes a NIC whose MAC is already used on another port") { (s) throws(SwitchError) in
            try s.check(extension: DuplicateMACGuard.extensionName, known: [])
            return DuplicateMACGuard()
        },
        Entry(name: MACSpoofGuard.extensionName, extensionClass: .filtering,
              summary: "drops frames whose source MAC is not the port's (mac-spoof-guard, allowed-macs)",
              settings: [Setting("vm-default", "on|off: the guard on VM ports without mac-spoof-guard set (default on)")]) { (s) throws(SwitchError) in
            try MACSpoofGuard(settings: s)
        },
        Entry(name: IPGuard.extensionName, extensionClass: .filtering,
              summary: "drops IPv4/IPv6/ARP/ND from source addresses not allowed (ip-guard, allowed-ips, dhcp-snooping)",
              settings: [Setting("vm-default", "on|off: the guard on VM ports without ip-guard set (default off)")]) { (s) throws(SwitchError) in
            try IPGuard(settings: s)
        },
        Entry(name: DHCPGuard.extensionName, extensionClass: .filtering,
              summary: "drops DHCP server messages from guarded ports (dhcp-guard)",
              settings: [Setting("vm-default", "on|off: the guard on VM ports without dhcp-guard set (default off)")]) { (s) throws(SwitchError) in
            try DHCPGuard(settings: s)
        },
        Entry(name: RouterGuard.extensionName, extensionClass: .filtering,
              summary: "drops router advertisements and redirects from guarded ports (router-guard)",
              settings: [Setting("vm-default", "on|off: the guard on VM ports without router-guard set (default off)")]) { (s) throws(SwitchError) in
            try RouterGuard(settings: s)
        },
        Entry(name: PortIsolation.extensionName, extensionClass: .filtering,
              summary: "isolated, community and promiscuous ports (isolated, pvlan)") { (s) throws(SwitchError) in
            try s.check(extension: PortIsolation.extensionName, known: [])
            return PortIsolation()
        },
        Entry(name: MACLimit.extensionName, extensionClass: .filtering,
              summary: "limits the MAC addresses a port may use (mac-limit)",
              settings: [Setting("vm-default", "N|none: the limit on VM ports without mac-limit set (default none)")]) { (s) throws(SwitchError) in
            try MACLimit(settings: s)
        },
        Entry(name: PortACLFilter.extensionName, extensionClass: .filtering,
              summary: "port ACLs: ordered allow/deny/count rules per port and direction (acl, acl-default-in, acl-default-out)") { (s) throws(SwitchError) in
            try PortACLFilter(settings: s)
        },
        Entry(name: StormControl.extensionName, extensionClass: .filtering,
              summary: "limits broadcast, multicast and unknown-unicast frames per second from a port (storm-*)") { (s) throws(SwitchError) in
            try StormControl(settings: s)
        },
        Entry(name: Policer.extensionName, extensionClass: .filtering,
              summary: "token-bucket policing of a port's ingress and egress in bits and frames per second (ingress-*, egress-*)") { (s) throws(SwitchError) in
            try Policer(settings: s)
        },
    ])

    /// What a daemon enables when its config does not say: every shipped policy, so a port gets
    /// the safe defaults (MAC spoofing guard on VM ports) and any per-port setting is enforced.
    public static let defaultEnabled = [
        DuplicateMACGuard.extensionName, MACSpoofGuard.extensionName, IPGuard.extensionName, DHCPGuard.extensionName,
        RouterGuard.extensionName, PortIsolation.extensionName, MACLimit.extensionName, PortACLFilter.extensionName,
        StormControl.extensionName, Policer.extensionName,
    ]
}
