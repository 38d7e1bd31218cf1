import Foundation

/// One request from `tapswitchctl` to `tapswitchd`.
///
/// Wire form: one JSON object on one line, `{"op": "<op>", ...fields}`:
///
/// | op | fields |
/// |---|---|
/// | `vm-start` | `vm`: `{name, nics: [{tap, mac?, owner?, group?, mtu?, type?, vlan?}]}` |
/// | `vm-stop` | `name`, `force?` (default false) |
/// | `port-add-internal` | `name`, `mac?`, `netns?` |
/// | `port-add-external` | `device`, `settings?`: `["key=value", ...]` (its VLAN policy and other port settings) |
/// | `port-remove` | `name` |
/// | `port-set` | `name`, `settings`: `["key=value", ...]` (one vetoable change; see ``PortSettings``) |
/// | `port-get` | `name` |
/// | `port-reset` | `name`, `keys`: `["key", ...]` |
/// | `segment-add` | `segment`: `{name, vlan, vni, local, underlay, flood?, udpPort?, learning?, mtu?}` (see ``SegmentSpec``) |
/// | `segment-del` | `name` |
/// | `segment-list` | none |
/// | `mirror-add` | `mirror`: `{name, source: [PORT...], direction?, vlan?, to}` (see ``MirrorSpec``) |
/// | `mirror-del` | `name` |
/// | `mirror-list` | none |
/// | `acl-add` | `name`, `rule`: the rule's `key=value` words separated by spaces (see ``ACLRule``) |
/// | `acl-del` | `name`, `id` (the rule id) |
/// | `acl-list` | `name` |
/// | `nic-save` | `name` (the port): its NIC's extension state (`nicStates`) |
/// | `nic-restore` | `name`, `nicStates`: blobs from `nic-save` (here or on another host) handed to the extensions |
/// | `extension-enable` | `name`, `position?` (within its class; default: the top) |
/// | `extension-disable` | `name` |
/// | `extension-set` | `name`, `settings`: `["key=value", ...]` (the extension's whole settings) |
/// | `show`, `fdb`, `extensions`, `ping`, `version` | none |
/// | `events` | `follow?` (default false) |
/// | `capture` | `ports`, `direction?` (`in`/`out`/`both`), `count?`, `snaplen?`, `drops?`: one response line, then a pcapng stream (see ``CaptureRequest``) |
///
/// Unknown ops, unknown fields, wrong types and bad values are rejected naming the field.
public enum ControlRequest: Sendable, Equatable {
    case vmStart(VMSpec)
    /// `force`: remove the TAPs even while a guest holds them (otherwise refused with `busy`).
    case vmStop(name: String, force: Bool = false)
    case portAddInternal(InternalPortSpec)
    case portAddExternal(ExternalPortSpec)
    case portRemove(name: String)
    case portSet(name: String, settings: [String])
    case portGet(name: String)
    case portReset(name: String, keys: [String])
    case segmentAdd(SegmentSpec)
    case segmentDel(name: String)
    case segmentList
    case mirrorAdd(MirrorSpec)
    case mirrorDel(name: String)
    case mirrorList
    /// Adds a rule to a port's ACL (one vetoable property change, recorded like `port-set`).
    case aclAdd(name: String, rule: String)
    case aclDelete(name: String, id: Int)
    case aclList(name: String)
    /// NIC save of one port (OID_SWITCH_NIC_SAVE on demand), e.g. before a live migration.
    case nicSave(name: String)
    /// NIC restore of one port from saved blobs (OID_SWITCH_NIC_RESTORE), e.g. after a live migration.
    case nicRestore(name: String, states: [ExtensionNICState])
    case extensionEnable(name: String, position: Int?)
    case extensionDisable(name: String)
    case extensionSet(name: String, settings: [String])
    case show
    case fdb
    case extensions
    /// `after`: only events with a larger sequence number (a follower resuming after a reconnect).
    case events(follow: Bool, after: UInt64? = nil)
    case ping
    case version
    case capture(CaptureRequest)

    /// The `op` string on the wire.
    public var op: String {
        switch self {
        case .vmStart: "vm-start"
        case .vmStop: "vm-stop"
        case .portAddInternal: "port-add-internal"
        case .portAddExternal: "port-add-external"
        case .portRemove: "port-remove"
        case .portSet: "port-set"
        case .portGet: "port-get"
        case .portReset: "port-reset"
        case .segmentAdd: "segment-add"
        case .segmentDel: "segment-del"
        case .segmentList: "segment-list"
        case .mirrorAdd: "mirror-add"
        case .mirrorDel: "mirror-del"
        case .mirrorList: "mirror-list"
        case .aclAdd: "acl-add"
        case .aclDelete: "acl-del"
        case .aclList: "acl-list"
        case .nicSave: "nic-save"
        case .nicRestore: "nic-restore"
        case .extensionEnable: "extension-enable"
        case .extensionDisable: "extension-disable"
        case .extensionSet: "extension-set"
        case .show: "show"
        case .fdb: "fdb"
        case .extensions: "extensions"
        case .events: "events"
        case .ping: "ping"
        case .version: "version"
        case .capture: "capture"
        }
    }

    public static let allOps = ["vm-start", "vm-stop", "port-add-internal", "port-add-external", "port-remove",
                                "port-set", "port-get", "port-reset", "segment-add", "segment-del", "segment-list", "mirror-add", "mirror-del", "mirror-list", "acl-add", "acl-del", "acl-list", "nic-save", "nic-restore", "extension-enable", "extension-disable", "extension-set", "show", "fdb", "extensions", "events", "ping", "version", "capture"]

    /// The VM, port or extension a request names (for logs), if any.
    public var target: String? {
        switch self {
        case .vmStart(let vm): vm.name
        case .vmStop(let name, _), .portRemove(let name), .portSet(let name, _), .portGet(let name), .portReset(let name, _),
             .extensionEnable(let name, _), .extensionDisable(let name), .extensionSet(let name, _),
             .nicSave(let name), .nicRestore(let name, _): name
        case .portAddInternal(let spec): spec.name
        case .portAddExternal(let spec): spec.device
        case .mirrorAdd(let spec): spec.name
        case .mirrorDel(let name): name
        default: nil
        }
    }

    /// True for requests that change the switch (the server serialises and records them).
    public var isMutating: Bool {
        switch self {
        case .vmStart, .vmStop, .portAddInternal, .portAddExternal, .portRemove, .portSet, .portReset,
             .segmentAdd, .segmentDel, .mirrorAdd, .mirrorDel, .aclAdd, .aclDelete, .extensionEnable, .extensionDisable, .extensionSet, .nicRestore: true
        default: false
        }
    }
}

extension ControlRequest: Codable {
    public init(from decoder: any Decoder) throws {
        // Read `op` first; the fields allowed depend on it.
        let probe = try StrictObject(decoder, allowed: nil)
        let op = try probe.require(String.self, "op")
        func fields(_ allowed: Set<String>) throws -> StrictObject {
            try StrictObject(decoder, allowed: allowed.union(["op"]))
        }
        switch op {
        case "vm-start":
            self = .vmStart(try fields(["vm"]).require(VMSpec.self, "vm"))
        case "vm-stop":
            let o = try fields(["name", "force"])
            self = .vmStop(name: try Validate.vmName(try o.require(String.self, "name"), field: "name"),
                           force: try o.optional(Bool.self, "force") ?? false)
        case "port-add-internal":
            let o = try fields(["name", "mac", "netns"])
            let spec = InternalPortSpec(name: try o.require(String.self, "name"), mac: try o.optional(MACAddress.self, "mac"),
                                        netns: try o.optional(String.self, "netns"))
            try spec.validate(prefix: "")
            self = .portAddInternal(spec)
        case "port-add-external":
            let o = try fields(["device", "settings"])
            let spec = ExternalPortSpec(device: try o.require(String.self, "device"), settings: try o.optional([String].self, "settings") ?? [])
            try spec.validate(prefix: "")
            self = .portAddExternal(spec)
        case "port-remove":
            let o = try fields(["name"])
            self = .portRemove(name: try Validate.interfaceName(try o.require(String.self, "name"), field: "name"))
        case "port-set":
            let o = try fields(["name", "settings"])
            let name = try Validate.interfaceName(try o.require(String.self, "name"), field: "name")
            let settings = try o.require([String].self, "settings")
            if settings.isEmpty { throw FieldError(field: "settings", message: "give at least one key=value") }
            do { _ = try PortSettings.parse(settings) } catch { throw FieldError(field: "settings", message: error.message) }
            self = .portSet(name: name, settings: settings)
        case "port-get":
            self = .portGet(name: try Validate.interfaceName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "port-reset":
            let o = try fields(["name", "keys"])
            let name = try Validate.interfaceName(try o.require(String.self, "name"), field: "name")
            let keys = try o.require([String].self, "keys")
            if let bad = keys.first(where: { !PortSettings.keys.contains($0) }) {
                throw FieldError(field: "keys", message: "unknown port setting '\(bad)' (keys: \(PortSettings.keys.joined(separator: ", ")))")
            }
            self = .portReset(name: name, keys: keys)
        case "segment-add":
            self = .segmentAdd(try fields(["segment"]).require(SegmentSpec.self, "segment"))
        case "segment-del":
            self = .segmentDel(name: try Validate.interfaceName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "mirror-add":
            self = .mirrorAdd(try fields(["mirror"]).require(MirrorSpec.self, "mirror"))
        case "mirror-del":
            self = .mirrorDel(name: try Validate.mirrorName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "acl-add":
            let o = try fields(["name", "rule"])
            let name = try Validate.interfaceName(try o.require(String.self, "name"), field: "name")
            let rule = try o.require(String.self, "rule")
            do { _ = try ACLRule(rule) } catch { throw FieldError(field: "rule", message: error.message) }
            self = .aclAdd(name: name, rule: rule)
        case "acl-del":
            let o = try fields(["name", "id"])
            let name = try Validate.interfaceName(try o.require(String.self, "name"), field: "name")
            let id = try o.require(Int.self, "id")
            if id < 1 { throw FieldError(field: "id", message: "\(id) is not a rule id (1 or more)") }
            self = .aclDelete(name: name, id: id)
        case "nic-save":
            self = .nicSave(name: try Validate.interfaceName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "nic-restore":
            let o = try fields(["name", "nicStates"])
            let name = try Validate.interfaceName(try o.require(String.self, "name"), field: "name")
            self = .nicRestore(name: name, states: try o.require([ExtensionNICState].self, "nicStates"))
        case "acl-list":
            self = .aclList(name: try Validate.interfaceName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "extension-enable":
            let o = try fields(["name", "position"])
            let position = try o.optional(Int.self, "position")
            if let position, position < 0 { throw FieldError(field: "position", message: "\(position) is negative") }
            self = .extensionEnable(name: try Validate.extensionName(try o.require(String.self, "name"), field: "name"), position: position)
        case "extension-disable":
            self = .extensionDisable(name: try Validate.extensionName(try fields(["name"]).require(String.self, "name"), field: "name"))
        case "extension-set":
            let o = try fields(["name", "settings"])
            let settings = try o.require([String].self, "settings")
            _ = try Validate.extensionSettings(settings, field: "settings")
            self = .extensionSet(name: try Validate.extensionName(try o.require(String.self, "name"), field: "name"), settings: settings)
        case "events":
            let o = try fields(["follow", "after"])
            self = .events(follow: try o.optional(Bool.self, "follow") ?? false, after: try o.optional(UInt64.self, "after"))
        case "capture":
            let o = try fields(["ports", "direction", "count", "snaplen", "drops"])
            let direction = try o.optional(String.self, "direction") ?? "both"
            guard let d = CaptureRequest.Directions(rawValue: direction) else {
                throw FieldError(field: "direction", message: "'\(direction)' is not in, out or both")
            }
            let r = CaptureRequest(ports: try o.require([String].self, "ports"), direction: d, count: try o.optional(Int.self, "count"),
                                   snaplen: try o.optional(Int.self, "snaplen") ?? CaptureRequest.defaultSnaplen,
                                   drops: try o.optional(Bool.self, "drops") ?? false)
            try r.validate()
            self = .capture(r)
        case "show", "fdb", "extensions", "ping", "version", "segment-list", "mirror-list":
            _ = try fields([])
            switch op {
            case "segment-list": self = .segmentList
            case "mirror-list": self = .mirrorList
            case "show": self = .show
            case "fdb": self = .fdb
            case "extensions": self = .extensions
            case "ping": self = .ping
            default: self = .version
            }
        default:
            throw FieldError(field: "op", message: "unknown operation '\(op)' (expected one of: \(Self.allOps.joined(separator: ", ")))")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(op, forKey: AnyKey("op"))
        switch self {
        case .vmStart(let vm): try c.encode(vm, forKey: AnyKey("vm"))
        case .vmStop(let name, let force):
            try c.encode(name, forKey: AnyKey("name"))
            if force { try c.encode(true, forKey: AnyKey("force")) }
        case .portRemove(let name), .portGet(let name), .segmentDel(let name), .mirrorDel(let name): try c.encode(name, forKey: AnyKey("name"))
        case .segmentAdd(let spec): try c.encode(spec, forKey: AnyKey("segment"))
        case .mirrorAdd(let spec): try c.encode(spec, forKey: AnyKey("mirror"))
        case .portSet(let name, let settings):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(settings, forKey: AnyKey("settings"))
        case .portReset(let name, let keys):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(keys, forKey: AnyKey("keys"))
        case .aclAdd(let name, let rule):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(rule, forKey: AnyKey("rule"))
        case .aclDelete(let name, let id):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(id, forKey: AnyKey("id"))
        case .aclList(let name), .nicSave(let name):
            try c.encode(name, forKey: AnyKey("name"))
        case .nicRestore(let name, let states):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(states, forKey: AnyKey("nicStates"))
        case .extensionEnable(let name, let position):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encodeIfPresent(position, forKey: AnyKey("position"))
        case .extensionDisable(let name):
            try c.encode(name, forKey: AnyKey("name"))
        case .extensionSet(let name, let settings):
            try c.encode(name, forKey: AnyKey("name"))
            try c.encode(settings, forKey: AnyKey("settings"))
        case .portAddInternal(let spec):
            try c.encode(spec.name, forKey: AnyKey("name"))
            try c.encodeIfPresent(spec.mac, forKey: AnyKey("mac"))
            try c.encodeIfPresent(spec.netns, forKey: AnyKey("netns"))
        case .portAddExternal(let spec):
            try c.encode(spec.device, forKey: AnyKey("device"))
            if !spec.settings.isEmpty { try c.encode(spec.settings, forKey: AnyKey("settings")) }
        case .events(let follow, let after):
            try c.encode(follow, forKey: AnyKey("follow"))
            try c.encodeIfPresent(after, forKey: AnyKey("after"))
        case .capture(let r):
            try c.encode(r.ports, forKey: AnyKey("ports"))
            try c.encode(r.direction.rawValue, forKey: AnyKey("direction"))
            try c.encodeIfPresent(r.count, forKey: AnyKey("count"))
            try c.encode(r.snaplen, forKey: AnyKey("snaplen"))
            if r.drops { try c.encode(true, forKey: AnyKey("drops")) }
        case .show, .fdb, .extensions, .ping, .version, .segmentList, .mirrorList: break
        }
    }
}

/// One response line. `ok` is always present; on failure `error` (the operator's one line) and
/// `code` (a ``SwitchError/Code`` wire name, e.g. `exists`) are set, plus `vetoingExtension` and
/// `vetoReason` when an extension refused the request.
///
/// Successful responses carry the payload for their request: `snapshot` (show), `fdb`, `extensions`,
/// `events` (events without follow, and the backlog sent first when following), `event` (each
/// streamed line of `events --follow`), `ports` (ports created by vm-start and port-add-*; the
/// port after port-set, port-get and port-reset), `extensions` (also after extension-*),
/// `version` (ping and version).
public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    /// Why the request failed; nil on success (and from daemons older than the field).
    public var code: SwitchError.Code?
    public var vetoingExtension: String?
    public var vetoReason: String?
    public var snapshot: SwitchSnapshot?
    public var fdb: [FDBEntry]?
    public var extensions: [ExtensionInfo]?
    public var events: [SwitchEvent]?
    public var event: SwitchEvent?
    public var ports: [PortInfo]?
    public var version: VersionInfo?
    /// `vm stop` / `port remove`: ports whose removal waits for references to drain (NIC_DISCONNECT
    /// is done; NIC_DELETE ... PORT_DELETE follow by themselves and show up as events).
    public var pending: [String]?
    /// `segment list` (every segment), `segment add` (the one added).
    public var segments: [SegmentSpec]?
    /// `acl-add`, `acl-del`, `acl-list`: the port's ACL with its counters.
    public var acl: PortACLInfo?
    /// `nic-save`: the port's NIC state, one blob per extension that has any; `nic-restore`: the
    /// blobs no extension took (not enabled here, or refused: an unknown version).
    public var nicStates: [ExtensionNICState]?
    /// `mirror list` (every mirror), `mirror add` (the one added), with state and counters.
    public var mirrors: [MirrorInfo]?

    public init(ok: Bool = true, error: String? = nil, code: SwitchError.Code? = nil, vetoingExtension: String? = nil,
                vetoReason: String? = nil, snapshot: SwitchSnapshot? = nil, fdb: [FDBEntry]? = nil,
                extensions: [ExtensionInfo]? = nil, events: [SwitchEvent]? = nil, event: SwitchEvent? = nil,
                ports: [PortInfo]? = nil, version: VersionInfo? = nil, pending: [String]? = nil, segments: [SegmentSpec]? = nil,
                acl: PortACLInfo? = nil, nicStates: [ExtensionNICState]? = nil,
                mirrors: [MirrorInfo]? = nil) {
        self.ok = ok
        self.error = error
        self.code = code
        self.vetoingExtension = vetoingExtension
        self.vetoReason = vetoReason
        self.snapshot = snapshot
        self.fdb = fdb
        self.extensions = extensions
        self.events = events
        self.event = event
        self.ports = ports
        self.version = version
        self.pending = pending
        self.segments = segments
        self.acl = acl
        self.nicStates = nicStates
        self.mirrors = mirrors
    }

    /// A failed request, carrying the error's code (and veto) to the client.
    public static func failure(_ error: SwitchError) -> ControlResponse {
        ControlResponse(ok: false, error: error.message, code: error.code, vetoingExtension: error.vetoingExtension,
                        vetoReason: error.vetoReason)
    }

    /// The error a failed response carries, as the daemon threw it; nil on success. A response
    /// without a code (a daemon older than the field) is reported as ``SwitchError/Code/system``.
    public var switchError: SwitchError? {
        guard !ok else { return nil }
        return SwitchError(code ?? .system, error ?? "the daemon reported a failure without a message",
                           vetoingExtension: vetoingExtension, vetoReason: vetoReason)
    }
}
