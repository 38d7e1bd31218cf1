import ControlProtocol

/// The alias a VM TAP carries from the moment it exists (`ip link show` prints it): it says which
/// switch made the TAP, for which VM, and the port's settings, so a restarted daemon can adopt or
/// remove its own TAPs even when `state.json` was lost or damaged.
///
/// Text form (at most 255 bytes, the kernel's limit):
/// `tapswitch:SWITCHID vm=NAME nic=INDEX [type=emulated] [removing] [settings=unknown] SETTING...`,
/// where each SETTING is a canonical `key=value` port setting (`vlan=10`, `isolated=on`).
/// `removing` marks a TAP whose `vm stop` is recorded and whose deletion is under way;
/// `settings=unknown` one whose settings did not fit (it is never adopted without its record).
public struct TapMarker: Sendable, Equatable {
    public var switchID: String
    public var vm: String
    public var nic: Int
    public var type: PortType
    public var removing: Bool
    /// The port's settings; nil when they did not fit into the alias.
    public var settings: [String]?

    public init(switchID: String, vm: String, nic: Int, type: PortType, removing: Bool = false, settings: [String]?) {
        self.switchID = switchID
        self.vm = vm
        self.nic = nic
        self.type = type
        self.removing = removing
        self.settings = settings
    }

    /// The most the kernel keeps (`IFALIASZ` minus the terminating NUL).
    static let maxLength = 255

    /// What every marker of switch `id` starts with.
    public static func prefix(_ id: String) -> String { "tapswitch:\(id) " }

    public var text: String {
        var head = Self.prefix(switchID) + "vm=\(vm) nic=\(nic)"
        if type != .synthetic { head += " type=\(type.rawValue)" }
        if removing { head += " removing" }
        let full = ([head] + (settings ?? [])).joined(separator: " ")
        // A setting with spaces in its value (an ACL rule) cannot be told from the next word.
        if let settings, !settings.contains(where: { $0.contains(" ") }), full.utf8.count <= Self.maxLength { return full }
        return head + " settings=unknown"
    }

    /// Reads a marker of switch `id`; nil for any other alias.
    public init?(parsing alias: String, switchID id: String) {
        guard alias.hasPrefix(Self.prefix(id)) else { return nil }
        var vm: String?, nic: Int?, type = PortType.synthetic, removing = false, unknown = false
        var settings: [String] = []
        for word in alias.dropFirst(Self.prefix(id).count).split(separator: " ").map(String.init) {
            if word.hasPrefix("vm=") { vm = String(word.dropFirst(3)) }
            else if word.hasPrefix("nic=") { nic = Int(word.dropFirst(4)) }
            else if word.hasPrefix("type=") { guard let t = PortType(rawValue: String(word.dropFirst(5))) else { return nil }; type = t }
            else if word == "removing" { removing = true }
            else if word == "settings=unknown" { unknown = true }
            else { settings.append(word) }
        }
        guard let vm, let nic else { return nil }
        self.init(switchID: id, vm: vm, nic: nic, type: type, removing: removing, settings: unknown ? nil : settings)
    }
}

/// A TAP of this switch as the kernel shows it, with its marker (see ``SwitchBackend/markedTAPs()``).
public struct MarkedTAP: Sendable, Equatable {
    public var name: String
    public var marker: TapMarker
    public var mac: MACAddress?
    public var mtu: Int
    public var owner: UInt32?
    public var group: UInt32?

    public init(name: String, marker: TapMarker, mac: MACAddress?, mtu: Int, owner: UInt32?, group: UInt32?) {
        self.name = name
        self.marker = marker
        self.mac = mac
        self.mtu = mtu
        self.owner = owner
        self.group = group
    }
}
