/// A token-bucket policer for one direction of a port: a rate in bits per second and/or in frames
/// per second, each with a burst (bucket depth). nil fields are off; defaults for a burst are 10 ms
/// at the rate, at least 3000 bytes or 8 frames.
public struct PolicerSetting: Sendable, Equatable {
    /// Bits per second.
    public var rate: UInt64?
    /// Bytes.
    public var burst: UInt64?
    /// Frames per second.
    public var frameRate: UInt64?
    /// Frames.
    public var frameBurst: UInt64?

    public init(rate: UInt64? = nil, burst: UInt64? = nil, frameRate: UInt64? = nil, frameBurst: UInt64? = nil) {
        self.rate = rate
        self.burst = burst
        self.frameRate = frameRate
        self.frameBurst = frameBurst
    }

    public var isOn: Bool { rate != nil || frameRate != nil }
    /// The byte bucket's depth in force.
    public var effectiveBurst: UInt64 { burst ?? max((rate ?? 0) / 8 / 100, 3000) }
    /// The frame bucket's depth in force.
    public var effectiveFrameBurst: UInt64 { frameBurst ?? max((frameRate ?? 0) / 100, 8) }
}

/// Storm control and policing of a port (Hyper-V's `-StormLimit` and `-MaximumBandwidth`): limits
/// in frames per second for the broadcast, multicast and unknown-unicast frames the port sends,
/// and a policer per direction (`ingress`: what the port sends into the switch; `egress`: what the
/// switch delivers to it). Excess frames are dropped and counted.
public struct TrafficLimits: Sendable, Equatable {
    public var stormBroadcast: UInt64?
    public var stormMulticast: UInt64?
    public var stormUnknown: UInt64?
    public var ingress: PolicerSetting
    public var egress: PolicerSetting

    public init(stormBroadcast: UInt64? = nil, stormMulticast: UInt64? = nil, stormUnknown: UInt64? = nil,
                ingress: PolicerSetting = PolicerSetting(), egress: PolicerSetting = PolicerSetting()) {
        self.stormBroadcast = stormBroadcast
        self.stormMulticast = stormMulticast
        self.stormUnknown = stormUnknown
        self.ingress = ingress
        self.egress = egress
    }

    public var isDefault: Bool { self == TrafficLimits() }
    public var hasStormControl: Bool { stormBroadcast != nil || stormMulticast != nil || stormUnknown != nil }

    public static let keys = [
        "storm-broadcast", "storm-multicast", "storm-unknown",
        "ingress-rate", "ingress-burst", "ingress-frame-rate", "ingress-frame-burst",
        "egress-rate", "egress-burst", "egress-frame-rate", "egress-frame-burst",
    ]

    /// Highest rate taken: 1 Tbit/s, 1e9 frames/s.
    static let maxBits: UInt64 = 1_000_000_000_000
    static let maxFrames: UInt64 = 1_000_000_000

    /// Sets one key (`none` turns it off). The error names the key and value.
    public mutating func set(_ key: String, _ value: String) throws(SwitchError) {
        let word = "\(key)=\(value)"
        let off = value == "none"
        func frames() throws(SwitchError) -> UInt64? { off ? nil : try Self.count(value, word, unit: "frames per second") }
        switch key {
        case "storm-broadcast": stormBroadcast = try frames()
        case "storm-multicast": stormMulticast = try frames()
        case "storm-unknown": stormUnknown = try frames()
        case "ingress-rate": ingress.rate = off ? nil : try Self.bits(value, word)
        case "ingress-burst": ingress.burst = off ? nil : try Self.bytes(value, word)
        case "ingress-frame-rate": ingress.frameRate = try frames()
        case "ingress-frame-burst": ingress.frameBurst = off ? nil : try Self.count(value, word, unit: "frames")
        case "egress-rate": egress.rate = off ? nil : try Self.bits(value, word)
        case "egress-burst": egress.burst = off ? nil : try Self.bytes(value, word)
        case "egress-frame-rate": egress.frameRate = try frames()
        case "egress-frame-burst": egress.frameBurst = off ? nil : try Self.count(value, word, unit: "frames")
        default: throw SwitchError(.invalidArgument, "unknown traffic limit '\(key)'")
        }
    }

    /// The canonical words for what is set, in key order.
    public var assignments: [String] {
        var out: [String] = []
        for key in Self.keys { if let v = value(of: key) { out.append("\(key)=\(v)") } }
        return out
    }

    /// One key's value as printed, nil when off.
    public func value(of key: String) -> String? {
        switch key {
        case "storm-broadcast": stormBroadcast.map(String.init)
        case "storm-multicast": stormMulticast.map(String.init)
        case "storm-unknown": stormUnknown.map(String.init)
        case "ingress-rate": ingress.rate.map(Self.formatBits)
        case "ingress-burst": ingress.burst.map(String.init)
        case "ingress-frame-rate": ingress.frameRate.map(String.init)
        case "ingress-frame-burst": ingress.frameBurst.map(String.init)
        case "egress-rate": egress.rate.map(Self.formatBits)
        case "egress-burst": egress.burst.map(String.init)
        case "egress-frame-rate": egress.frameRate.map(String.init)
        case "egress-frame-burst": egress.frameBurst.map(String.init)
        default: nil
        }
    }

    /// Why the limits cannot be applied, or nil (a burst without its rate).
    public var problem: String? {
        for (name, p) in [("ingress", ingress), ("egress", egress)] {
            if p.burst != nil && p.rate == nil { return "\(name)-burst needs \(name)-rate" }
            if p.frameBurst != nil && p.frameRate == nil { return "\(name)-frame-burst needs \(name)-frame-rate" }
        }
        return nil
    }

    static func count(_ value: String, _ word: String, unit: String) throws(SwitchError) -> UInt64 {
        guard let n = UInt64(value), String(n) == value, n >= 1, n <= maxFrames else {
            throw SwitchError(.invalidArgument, "\(word): expected \(unit), 1-\(maxFrames), or none")
        }
        return n
    }

    /// `100mbit`, `1gbit`, `500kbit`, `64000bit` or a plain number of bits per second (decimal units).
    static func bits(_ value: String, _ word: String) throws(SwitchError) -> UInt64 {
        let units: [(String, UInt64)] = [("tbit", 1_000_000_000_000), ("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000), ("bit", 1)]
        var digits = Substring(value.lowercased())
        var scale: UInt64 = 1
        if let u = units.first(where: { digits.hasSuffix($0.0) }) {
            digits = digits.dropLast(u.0.count)
            scale = u.1
        }
        guard let n = UInt64(digits), String(n) == digits, n >= 1, n <= maxBits / scale, n * scale >= 8000 else {
            throw SwitchError(.invalidArgument, "\(word): expected a rate like 100mbit, 1gbit or 500kbit (8kbit to 1tbit), or none")
        }
        return n * scale
    }

    /// `64kb`, `1mb` (decimal), `64kib`, `1mib` (binary) or a plain number of bytes.
    static func bytes(_ value: String, _ word: String) throws(SwitchError) -> UInt64 {
        let units: [(String, UInt64)] = [("kib", 1024), ("mib", 1 << 20), ("kb", 1000), ("mb", 1_000_000), ("b", 1)]
        var digits = Substring(value.lowercased())
        var scale: UInt64 = 1
        if let u = units.first(where: { digits.hasSuffix($0.0) }) {
            digits = digits.dropLast(u.0.count)
            scale = u.1
        }
        guard let n = UInt64(digits), String(n) == digits, n >= 1, n <= (1 << 32) / scale, n * scale >= 1514 else {
            throw SwitchError(.invalidArgument, "\(word): expected a size like 64kb, 1mb or 100000 (bytes, 1514 to 4 GiB), or none")
        }
        return n * scale
    }

    static func formatBits(_ b: UInt64) -> String {
        for (u, s) in [("tbit", UInt64(1_000_000_000_000)), ("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)] where b % s == 0 {
            return "\(b / s)\(u)"
        }
        return "\(b)bit"
    }
}
