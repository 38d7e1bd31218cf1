/// A port mirror (Hyper-V port mirroring, OVS `Mirror`): copies of the frames the `source` ports
/// send into the switch (`in`), receive from it (`out`) or both, optionally only those in VLAN
/// `vlan` (OVS `select_vlan`), go to port `to` as they were on the source's wire (a tagged frame
/// keeps its tag), bypassing `to`'s VLAN filtering; `to` keeps its own traffic.
///
/// Wire form (`mirror-add`, `mirror-list`, `state.json`): `{name, source: [PORT...], direction?, vlan?, to}`
/// (`direction` `in`, `out` or `both`, the default); config `[[mirror]]`: the same keys.
public struct MirrorSpec: Sendable, Equatable, Codable {
    public enum Direction: String, Sendable, CaseIterable, Codable {
        case `in`, out, both
        public var includesIn: Bool { self != .out }
        public var includesOut: Bool { self != .in }
    }

    public var name: String
    public var source: [String]
    public var direction: Direction
    /// Only frames in this VLAN (1..4094); nil: every frame.
    public var vlan: Int?
    public var to: String

    public static let maxSources = 64
    public static let maxNameLength = 32

    public init(name: String, source: [String], direction: Direction = .both, vlan: Int? = nil, to: String) {
        self.name = name
        self.source = source
        self.direction = direction
        self.vlan = vlan
        self.to = to
    }

    /// Checks every field; `field` maps a key (`name`, `source`, `vlan`, `to`) to what the operator
    /// wrote (a JSON path, a config key, a CLI flag).
    public func validate(field: (String) -> String) throws(FieldError) {
        _ = try Validate.mirrorName(name, field: field("name"))
        if source.isEmpty { throw FieldError(field: field("source"), message: "give at least one source port") }
        if source.count > Self.maxSources { throw FieldError(field: field("source"), message: "\(source.count) ports; the limit is \(Self.maxSources)") }
        var seen = Set<String>()
        for p in source {
            _ = try Validate.interfaceName(p, field: field("source"))
            if !seen.insert(p).inserted { throw FieldError(field: field("source"), message: "port '\(p)' is listed twice") }
        }
        _ = try Validate.interfaceName(to, field: field("to"))
        if seen.contains(to) {
            throw FieldError(field: field("to"), message: "'\(to)' is also a source: a mirror cannot send a port's copies to that port")
        }
        if let vlan { _ = try Validate.vlan(vlan, field: field("vlan")) }
    }

    public init(from decoder: any Decoder) throws {
        let o = try StrictObject(decoder, allowed: ["name", "source", "direction", "vlan", "to"])
        let d = try o.optional(String.self, "direction") ?? "both"
        guard let direction = Direction(rawValue: d) else {
            throw FieldError(field: o.field("direction"), message: "'\(d)' is not in, out or both")
        }
        self.init(name: try o.require(String.self, "name"), source: try o.require([String].self, "source"), direction: direction,
                  vlan: try o.optional(Int.self, "vlan"), to: try o.require(String.self, "to"))
        try validate(field: { o.field($0) })
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: AnyKey.self)
        try c.encode(name, forKey: AnyKey("name"))
        try c.encode(source, forKey: AnyKey("source"))
        try c.encode(direction.rawValue, forKey: AnyKey("direction"))
        try c.encodeIfPresent(vlan, forKey: AnyKey("vlan"))
        try c.encode(to, forKey: AnyKey("to"))
    }
}

/// A mirror with its state and counters (`mirror-list`, `show --json`, metrics).
///
/// Wire form: `{mirror: MirrorSpec, active, missing?: [PORT...], frames, bytes, drops}`. `frames` and
/// `bytes`: copies that reached `to`; `drops`: copies not sent (no room left at `to` after its
/// normal frames, `to` not connected, or more than the mirror holds per batch). Neither counts as
/// the ports' frames or drops.
public struct MirrorInfo: Sendable, Equatable, Codable {
    public var mirror: MirrorSpec
    /// False while the destination or every source is missing (the mirror resumes when they are back).
    public var active: Bool
    /// Ports the mirror names that do not exist now.
    public var missing: [String]?
    public var frames: UInt64
    public var bytes: UInt64
    public var drops: UInt64

    public init(mirror: MirrorSpec, active: Bool, missing: [String]? = nil, frames: UInt64 = 0, bytes: UInt64 = 0, drops: UInt64 = 0) {
        self.mirror = mirror
        self.active = active
        self.missing = missing
        self.frames = frames
        self.bytes = bytes
        self.drops = drops
    }
}

extension Validate {
    /// A mirror's name: A-Z a-z 0-9 _ . -, 1 to ``MirrorSpec/maxNameLength`` characters.
    public static func mirrorName(_ name: String, field: String) throws(FieldError) -> String {
        guard !name.isEmpty, name.utf8.count <= MirrorSpec.maxNameLength,
              name.utf8.allSatisfy({ isNameByte($0) }) else {
            throw FieldError(field: field, message: "'\(name)' is not a mirror name (A-Z a-z 0-9 _ . -, 1 to \(MirrorSpec.maxNameLength) characters)")
        }
        return name
    }

    private static func isNameByte(_ b: UInt8) -> Bool {
        (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x5F || b == 0x2E || b == 0x2D
    }
}
