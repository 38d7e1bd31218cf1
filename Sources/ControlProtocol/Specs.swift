/// What the operator asks for: VMs with their NICs, and internal and external ports.
///
/// These types are decoded strictly (unknown fields and bad values are errors naming the field),
/// because they arrive from the control socket, the state file and the CLI.

/// One VM NIC: a persistent TAP the daemon creates and QEMU attaches to.
public struct NICSpec: Sendable, Equatable, Codable {
    /// TAP interface name (QEMU: `-netdev tap,ifname=TAP,script=no,downscript=no`).
    public var tap: String
    /// The guest's MAC; nil lets the switch assign one.
    public var mac: MACAddress?
    /// User allowed to open the TAP (TUNSETOWNER), by name or uid; nil means root only.
    public var owner: String?
    /// Group allowed to open the TAP (TUNSETGROUP), by name or gid.
    public var group: String?
    /// TAP MTU; nil means 1500.
    public var mtu: Int?
    /// How the guest sees the NIC: `synthetic` (virtio-net) or `emulated` (e1000, rtl8139). Both
    /// are TAP-backed here; the type is reported and may steer policy.
    public var type: PortType
    /// Access VLAN; nil means untagged.
    public var vlan: Int?
    /// The port's other policy settings, as canonical `key=value` words (see ``PortSettings``);
    /// `vlan` above is the `vlan=N` word.
    public var settings: [String]

    public init(tap: String, mac: MACAddress? = nil, owner: String? = nil, group: String? = nil,
                mtu: Int? = nil, type: PortType = .synthetic, vlan: Int? = nil, settings: [String] = []) {
        self.tap = tap
        self.mac = mac
        self.owner = owner
        self.group = group
        self.mtu = mtu
        self.type = type
        self.vlan = vlan
        self.settings = settings
    }

    /// The port settings this NIC asks for (`vlan` plus `settings`).
    public func portSettings() throws(SwitchError) -> PortSettings {
        try PortSettings.parse((vlan.map { ["vlan=\($0)"] } ?? []) + settings)
    }

    /// Records `s` as this NIC's settings (an access VLAN in `vlan`, the rest in `settings`).
    public mutating func record(_ s: PortSettings) {
        if case .access(let id)? = s.vlan { vlan = Int(id) } else { vlan = nil }
        settings = s.assignments.filter { !$0.hasPrefix("vlan=") }
    }

    public static let defaultMTU = 1500

    /// Checks every field, naming the offending one under `prefix` (e.g. `vm.nics[0]`).
    public func validate(prefix: String) throws(FieldError) {
        func f(_ k: String) -> String { prefix.isEmpty ? k : "\(prefix).\(k)" }
        _ = try Validate.interfaceName(tap, field: f("tap"))
        if let mac { _ = try Validate.mac(mac.description, field: f("mac")) }
        if let owner { _ = try Validate.principal(owner, field: f("owner"), what: "user") }
        if let group { _ = try Validate.principal(group, field: f("group"), what: "group") }
        if let mtu { _ = try Validate.mtu(mtu, field: f("mtu")) }
        if let vlan { _ = try Validate.vlan(vlan, field: f("vlan")) }
        _ = try Validate.nicType(type.rawValue, field: f("type"))
        do { _ = try portSettings() } catch { throw FieldError(field: f("settings"), message: error.message) }
    }

    enum Keys { static let all: Set<String> = ["tap", "mac", "owner", "group", "mtu", "type", "vlan", "settings"] }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(tap, forKey: AnyKey("tap"))
        try c.encodeIfPresent(mac, forKey: AnyKey("mac"))
        try c.encodeIfPresent(owner, forKey: AnyKey("owner"))
        try c.encodeIfPresent(group, forKey: AnyKey("group"))
        try c.encodeIfPresent(mtu, forKey: AnyKey("mtu"))
        try c.encode(type, forKey: AnyKey("type"))
        try c.encodeIfPresent(vlan, forKey: AnyKey("vlan"))
        if !settings.isEmpty { try c.encode(settings, forKey: AnyKey("settings")) }
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: Keys.all)
        tap = try o.require(String.self, "tap")
        mac = try o.optional(MACAddress.self, "mac")
        owner = try o.optional(String.self, "owner")
        group = try o.optional(String.self, "group")
        mtu = try o.optional(Int.self, "mtu")
        if let t = try o.optional(String.self, "type") {
            type = try Validate.nicType(t, field: o.field("type"))
        } else {
            type = .synthetic
        }
        vlan = try o.optional(Int.self, "vlan")
        settings = try o.optional([String].self, "settings") ?? []
        try validate(prefix: codingPathString(decoder.codingPath))
    }
}

/// A VM: a name and its NICs, started and stopped as a unit.
public struct VMSpec: Sendable, Equatable, Codable {
    public var name: String
    public var nics: [NICSpec]

    public init(name: String, nics: [NICSpec]) {
        self.name = name
        self.nics = nics
    }

    /// A VM may have up to this many NICs (QEMU's PCI slots make more unrealistic).
    public static let maxNICs = 16

    public func validate(prefix: String) throws(FieldError) {
        func f(_ k: String) -> String { prefix.isEmpty ? k : "\(prefix).\(k)" }
        _ = try Validate.vmName(name, field: f("name"))
        if nics.isEmpty { throw FieldError(field: f("nics"), message: "a VM needs at least one NIC") }
        if nics.count > Self.maxNICs { throw FieldError(field: f("nics"), message: "\(nics.count) NICs; the limit is \(Self.maxNICs)") }
        var taps = Set<String>()
        var macs = Set<MACAddress>()
        for (i, nic) in nics.enumerated() {
            try nic.validate(prefix: f("nics[\(i)]"))
            if !taps.insert(nic.tap).inserted {
                throw FieldError(field: f("nics[\(i)].tap"), message: "TAP '\(nic.tap)' is used by two NICs of this VM")
            }
            if let mac = nic.mac, !macs.insert(mac).inserted {
                throw FieldError(field: f("nics[\(i)].mac"), message: "MAC \(mac) is used by two NICs of this VM")
            }
        }
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: ["name", "nics"])
        name = try o.require(String.self, "name")
        nics = try o.require([NICSpec].self, "nics")
        try validate(prefix: codingPathString(decoder.codingPath))
    }
}

/// An internal port: a host-side interface (a TAP owned by the daemon), optionally moved into a netns.
public struct InternalPortSpec: Sendable, Equatable, Codable {
    public var name: String
    public var mac: MACAddress?
    public var netns: String?
    /// The port's policy settings, canonical `key=value` words (see ``PortSettings``).
    public var settings: [String]

    public init(name: String, mac: MACAddress? = nil, netns: String? = nil, settings: [String] = []) {
        self.name = name
        self.mac = mac
        self.netns = netns
        self.settings = settings
    }

    public func validate(prefix: String) throws(FieldError) {
        func f(_ k: String) -> String { prefix.isEmpty ? k : "\(prefix).\(k)" }
        _ = try Validate.interfaceName(name, field: f("name"))
        if let mac { _ = try Validate.mac(mac.description, field: f("mac")) }
        if let netns { _ = try Validate.netnsName(netns, field: f("netns")) }
        do { _ = try PortSettings.parse(settings) } catch { throw FieldError(field: f("settings"), message: error.message) }
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: ["name", "mac", "netns", "settings"])
        name = try o.require(String.self, "name")
        mac = try o.optional(MACAddress.self, "mac")
        netns = try o.optional(String.self, "netns")
        settings = try o.optional([String].self, "settings") ?? []
        try validate(prefix: codingPathString(decoder.codingPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(name, forKey: AnyKey("name"))
        try c.encodeIfPresent(mac, forKey: AnyKey("mac"))
        try c.encodeIfPresent(netns, forKey: AnyKey("netns"))
        if !settings.isEmpty { try c.encode(settings, forKey: AnyKey("settings")) }
    }
}

/// An external port: an existing host device (the uplink) the switch sends to and receives from.
public struct ExternalPortSpec: Sendable, Equatable, Codable {
    public var device: String
    /// The port's policy settings, canonical `key=value` words (see ``PortSettings``).
    public var settings: [String]

    public init(device: String, settings: [String] = []) {
        self.device = device
        self.settings = settings
    }

    public func validate(prefix: String) throws(FieldError) {
        _ = try Validate.interfaceName(device, field: prefix.isEmpty ? "device" : "\(prefix).device")
        do { _ = try PortSettings.parse(settings) } catch {
            throw FieldError(field: prefix.isEmpty ? "settings" : "\(prefix).settings", message: error.message)
        }
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: ["device", "settings"])
        device = try o.require(String.self, "device")
        settings = try o.optional([String].self, "settings") ?? []
        try validate(prefix: codingPathString(decoder.codingPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(device, forKey: AnyKey("device"))
        if !settings.isEmpty { try c.encode(settings, forKey: AnyKey("settings")) }
    }
}
