/// The JSON form of the shared types: the one place where they meet their wire names.
///
/// The names are those the control protocol always used, so old clients keep working. Decoding
/// is exact: an unknown value is a `DecodingError.dataCorrupted` at the value's coding path whose
/// message names the value and the accepted ones (the control protocol reports it as
/// `field: message`). Nothing falls back to a default.

extension PortID: Codable {
    /// A port id is a plain number.
    public init(from decoder: any Decoder) throws {
        self.init(rawValue: try decoder.singleValueContainer().decode(UInt32.self))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension MACAddress: Codable {
    /// A MAC is a string of six colon-separated hex pairs, `52:54:00:12:34:56`.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let mac = MACAddress(text) else {
            throw wireError(decoder, "'\(text)' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")
        }
        self = mac
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension PortType: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "port type") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension PortState: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "port state") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension NICState: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "NIC state") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension ExtensionClass: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "extension class") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension UnknownUnicastPolicy: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "unknown-unicast policy") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension EventKind: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "event kind") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension SwitchError.Code: Codable {
    public init(from decoder: any Decoder) throws { self = try decodeName(decoder, "error code") }
    public func encode(to encoder: any Encoder) throws { try encodeName(rawValue, encoder) }
}

extension Direction: Codable {
    /// `"ingress"` or `"egress"` (the raw value is a counter index, not a wire name).
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        switch text {
        case "ingress": self = .ingress
        case "egress": self = .egress
        default: throw wireError(decoder, "unknown direction '\(text)' (expected one of: ingress, egress)")
        }
    }
    public func encode(to encoder: any Encoder) throws { try encodeName(description, encoder) }
}

extension PortCounters: Codable {
    /// `{framesIn, bytesIn, framesOut, bytesOut, drops: [{direction, reason, reporter, frames}]}`, drops
    /// sorted by direction, reason, reporter.
    private enum Keys: String, CodingKey { case framesIn, bytesIn, framesOut, bytesOut, drops }
    private struct Drop: Codable {
        var direction: Direction
        var reason: String
        var reporter: String
        var frames: UInt64
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(framesIn: try c.decode(UInt64.self, forKey: .framesIn), bytesIn: try c.decode(UInt64.self, forKey: .bytesIn),
                  framesOut: try c.decode(UInt64.self, forKey: .framesOut), bytesOut: try c.decode(UInt64.self, forKey: .bytesOut))
        for d in try c.decode([Drop].self, forKey: .drops) {
            drops[DropKey(direction: d.direction, reason: d.reason, reporter: d.reporter), default: 0] += d.frames
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(framesIn, forKey: .framesIn)
        try c.encode(bytesIn, forKey: .bytesIn)
        try c.encode(framesOut, forKey: .framesOut)
        try c.encode(bytesOut, forKey: .bytesOut)
        try c.encode(drops.sorted { $0.key < $1.key }.map { Drop(direction: $0.key.direction, reason: $0.key.reason, reporter: $0.key.reporter, frames: $0.value) },
                     forKey: .drops)
    }
}

extension ExtensionCounter: Codable {
    /// `{"name": "dropped", "value": 3}`.
    private enum Keys: String, CodingKey { case name, value }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(try c.decode(String.self, forKey: .name), try c.decode(UInt64.self, forKey: .value))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(name, forKey: .name)
        try c.encode(value, forKey: .value)
    }
}

extension ExtensionInfo: Codable {
    /// `{name, class, enabled, position?, summary?, counters}` (`counters` absent from daemons
    /// older than the field: empty).
    private enum Keys: String, CodingKey { case name, `class`, enabled, position, summary, counters }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(name: try c.decode(String.self, forKey: .name), extensionClass: try c.decode(ExtensionClass.self, forKey: .class),
                  enabled: try c.decode(Bool.self, forKey: .enabled), position: try c.decodeIfPresent(Int.self, forKey: .position),
                  summary: try c.decodeIfPresent(String.self, forKey: .summary),
                  counters: try c.decodeIfPresent([ExtensionCounter].self, forKey: .counters) ?? [])
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(name, forKey: .name)
        try c.encode(extensionClass, forKey: .class)
        try c.encode(enabled, forKey: .enabled)
        try c.encodeIfPresent(position, forKey: .position)
        try c.encodeIfPresent(summary, forKey: .summary)
        try c.encode(counters, forKey: .counters)
    }
}

extension VLANPolicy: Codable {
    /// `{"mode": "access", "vlan": 10}`, `{"mode": "trunk", "allowed": [10, 20], "native": 1}`
    /// (`native` absent: untagged frames are dropped; 0: the untagged domain; `allowed` sorted) or
    /// `{"mode": "untagged"}`.
    private enum Keys: String, CodingKey { case mode, vlan, allowed, native }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let mode = try c.decode(String.self, forKey: .mode)
        switch mode {
        case "access":
            self = .access(try Self.checked(c.decode(VLANID.self, forKey: .vlan), c, .vlan))
        case "trunk":
            var allowed = Set<VLANID>()
            var list = try c.nestedUnkeyedContainer(forKey: .allowed)
            while !list.isAtEnd {
                let id = try list.decode(VLANID.self)
                guard Self.range.contains(id) else {
                    throw DecodingError.dataCorrupted(.init(codingPath: list.codingPath + [WireIndex(list.currentIndex - 1)],
                                                            debugDescription: "VLAN \(id) is out of range 1..4094"))
                }
                allowed.insert(id)
            }
            let native = try c.decodeIfPresent(VLANID.self, forKey: .native)
            if let native, native != 0 { _ = try Self.checked(native, c, .native) }
            self = .trunk(allowed: allowed, native: native)
        case "untagged":
            self = .untagged
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [Keys.mode],
                                                    debugDescription: "unknown VLAN mode '\(mode)' (expected one of: access, trunk, untagged)"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .access(let id):
            try c.encode("access", forKey: .mode)
            try c.encode(id, forKey: .vlan)
        case .trunk(let allowed, let native):
            try c.encode("trunk", forKey: .mode)
            try c.encode(allowed.sorted(), forKey: .allowed)
            try c.encodeIfPresent(native, forKey: .native)
        case .untagged:
            try c.encode("untagged", forKey: .mode)
        }
    }

    static let range: ClosedRange<VLANID> = 1...4094

    private static func checked(_ id: VLANID, _ c: KeyedDecodingContainer<Keys>, _ key: Keys) throws -> VLANID {
        guard range.contains(id) else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [key], debugDescription: "VLAN \(id) is out of range 1..4094"))
        }
        return id
    }
}

// MARK: - Helpers

/// A wire name for a String-backed enum: its raw value.
private func encodeName(_ name: String, _ encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(name)
}

/// Decodes a String-backed enum by its raw value (the wire name); anything else is an error naming
/// the value, what it should have been and the accepted names.
private func decodeName<T: RawRepresentable & CaseIterable>(_ decoder: any Decoder, _ what: String) throws -> T where T.RawValue == String {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let value = T(rawValue: text) else {
        throw wireError(decoder, "unknown \(what) '\(text)' (expected one of: \(T.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return value
}

private func wireError(_ decoder: any Decoder, _ message: String) -> DecodingError {
    .dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: message))
}

private struct WireIndex: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ i: Int) { stringValue = "Index \(i)"; intValue = i }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.init(intValue) }
}
