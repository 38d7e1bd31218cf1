/// What an ACL rule does with a frame it matches.
public enum ACLAction: String, Sendable, CaseIterable {
    /// Let it pass; no later rule is evaluated.
    case allow
    /// Drop it (counted per port and reason); no later rule is evaluated.
    case deny
    /// Count it and go on with the next rule.
    case count
}

/// Which frames of a port a rule sees, as Hyper-V says it: `in` is what the port receives (frames
/// delivered to the VM), `out` what it sends (frames from the VM).
public enum ACLDirection: String, Sendable, CaseIterable {
    case `in`, out
}

/// One port ACL rule: a match on L2-L4 fields, an action, a priority (lowest first) and an id.
///
/// Text form (config, state store, wire): space-separated `key=value` words, e.g.
/// `id=3 direction=in priority=20 proto=tcp dst-port=22 action=deny`. Match keys: `src-mac`,
/// `dst-mac`, `ethertype` (`ipv4`, `ipv6`, `arp` or a number like `0x88cc`), `vlan`, `src-ip`,
/// `dst-ip` (IPv4 or IPv6 address or prefix), `proto` (`tcp`, `udp`, `icmp`, `icmpv6` or 0-255),
/// `src-port`, `dst-port` (N or N-M; needs proto tcp or udp), `established=yes` (TCP with ACK or
/// RST set; implies proto tcp), `icmp-type` (0-255; needs proto icmp or icmpv6). A rule with no
/// match key matches every frame of its direction.
public struct ACLRule: Sendable, Equatable {
    /// Unique per port; 0 while not yet assigned (see ``PortACL/add(_:)``).
    public var id: Int
    public var direction: ACLDirection
    /// Evaluation order within the direction, lowest first (ties by id); 0 while not yet assigned.
    public var priority: Int
    public var action: ACLAction
    public var sourceMAC: MACAddress?
    public var destinationMAC: MACAddress?
    public var etherType: UInt16?
    public var vlan: VLANID?
    public var sourceIP: IPPrefix?
    public var destinationIP: IPPrefix?
    public var ipProtocol: UInt8?
    public var sourcePorts: ClosedRange<UInt16>?
    public var destinationPorts: ClosedRange<UInt16>?
    /// TCP segments with ACK or RST set (replies of a connection; not a connection's first SYN).
    public var established: Bool
    public var icmpType: UInt8?

    public static let maxPriority = 1_000_000
    public static let keys = ["id", "direction", "priority", "action", "src-mac", "dst-mac", "ethertype", "vlan", "src-ip", "dst-ip",
                              "proto", "src-port", "dst-port", "established", "icmp-type"]
    public static let matchKeys = Array(keys.dropFirst(4))

    public init(direction: ACLDirection, action: ACLAction, id: Int = 0, priority: Int = 0) {
        self.id = id
        self.direction = direction
        self.priority = priority
        self.action = action
        established = false
    }

    /// Parses the text form; `id` and `priority` may be missing (0: assigned when added).
    public init(_ text: String) throws(SwitchError) {
        try self.init(words: text.split(separator: " ", omittingEmptySubsequences: true).map(String.init))
    }

    /// Parses `key=value` words. Errors name the key and value (`dst-port=70000: ...`).
    public init(words: [String]) throws(SwitchError) {
        var values: [String: String] = [:]
        for w in words {
            guard let eq = w.firstIndex(of: "=") else {
                throw Self.error("'\(w)': expected key=value (keys: \(Self.keys.joined(separator: ", ")))")
            }
            let key = String(w[..<eq]), value = String(w[w.index(after: eq)...])
            guard Self.keys.contains(key) else {
                throw Self.error("unknown ACL field '\(key)' in '\(w)' (fields: \(Self.keys.joined(separator: ", ")))")
            }
            guard values[key] == nil else { throw Self.error("\(key) is given twice") }
            values[key] = value
        }
        func word(_ k: String) -> String { "\(k)=\(values[k] ?? "")" }
        guard let d = values["direction"] else { throw Self.error("direction: missing (in or out)") }
        guard let direction = ACLDirection(rawValue: d) else { throw Self.error("\(word("direction")): expected in or out") }
        guard let a = values["action"] else { throw Self.error("action: missing (allow, deny or count)") }
        guard let action = ACLAction(rawValue: a) else { throw Self.error("\(word("action")): expected allow, deny or count") }
        self.init(direction: direction, action: action)
        if let v = values["id"] {
            guard let n = Int(v), String(n) == v, n >= 1, n <= 1_000_000 else { throw Self.error("\(word("id")): expected a rule id 1-1000000") }
            id = n
        }
        if let v = values["priority"] {
            guard let n = Int(v), String(n) == v, (1...Self.maxPriority).contains(n) else {
                throw Self.error("\(word("priority")): expected a number 1-\(Self.maxPriority) (lowest first)")
            }
            priority = n
        }
        if let v = values["src-mac"] { sourceMAC = try Self.mac(v, word("src-mac")) }
        if let v = values["dst-mac"] { destinationMAC = try Self.mac(v, word("dst-mac")) }
        if let v = values["ethertype"] { etherType = try Self.etherType(v, word("ethertype")) }
        if let v = values["vlan"] {
            guard let n = UInt16(v), String(n) == v, n <= 4094 else {
                throw Self.error("\(word("vlan")): expected a VLAN id 0-4094 (0: untagged)")
            }
            vlan = n
        }
        if let v = values["src-ip"] { sourceIP = try Self.prefix(v, word("src-ip")) }
        if let v = values["dst-ip"] { destinationIP = try Self.prefix(v, word("dst-ip")) }
        if let v = values["proto"] { ipProtocol = try Self.proto(v, word("proto")) }
        if let v = values["src-port"] { sourcePorts = try Self.portRange(v, word("src-port")) }
        if let v = values["dst-port"] { destinationPorts = try Self.portRange(v, word("dst-port")) }
        if let v = values["established"] {
            switch v {
            case "yes", "on", "true": established = true
            case "no", "off", "false": established = false
            default: throw Self.error("\(word("established")): expected yes or no")
            }
        }
        if let v = values["icmp-type"] {
            guard let n = UInt8(v), String(n) == v else { throw Self.error("\(word("icmp-type")): expected an ICMP type 0-255") }
            icmpType = n
        }
        if let problem { throw Self.error(problem) }
    }

    /// Why the match cannot be met by any frame (conflicting fields), or nil.
    public var problem: String? {
        if let s = sourceIP, let d = destinationIP, s.family != d.family {
            return "src-ip=\(s) and dst-ip=\(d): one is IPv4, the other IPv6"
        }
        let family = sourceIP?.family ?? destinationIP?.family
        if let e = etherType, let family {
            let want = family == .ipv4 ? 0x0800 : 0x86DD
            if e != want { return "ethertype=\(Self.formatEtherType(e)) conflicts with an \(family == .ipv4 ? "IPv4" : "IPv6") address" }
        }
        if let e = etherType, e != 0x0800 && e != 0x86DD, ipProtocol != nil {
            return "proto=\(Self.formatProto(ipProtocol!)) needs an IP ethertype (ipv4 or ipv6), not \(Self.formatEtherType(e))"
        }
        if established && ipProtocol != nil && ipProtocol != 6 {
            return "established=yes needs proto=tcp (it is proto=\(Self.formatProto(ipProtocol!)))"
        }
        if sourcePorts != nil || destinationPorts != nil {
            let key = sourcePorts != nil ? "src-port" : "dst-port"
            guard let p = ipProtocol, p == 6 || p == 17 || p == 132 else {
                return "\(key) needs proto=tcp or proto=udp"
            }
        }
        if icmpType != nil {
            guard let p = ipProtocol, p == 1 || p == 58 else { return "icmp-type needs proto=icmp or proto=icmpv6" }
            if p == 1 && family == .ipv6 { return "proto=icmp is IPv4's; use proto=icmpv6 with IPv6 addresses" }
            if p == 58 && family == .ipv4 { return "proto=icmpv6 is IPv6's; use proto=icmp with IPv4 addresses" }
        }
        return nil
    }

    /// The canonical words: id, direction, priority, the match keys set, action.
    public var words: [String] {
        var out: [String] = []
        if id != 0 { out.append("id=\(id)") }
        out.append("direction=\(direction.rawValue)")
        if priority != 0 { out.append("priority=\(priority)") }
        out += matchWords
        out.append("action=\(action.rawValue)")
        return out
    }

    /// Only the match keys set, as words (empty: matches everything).
    public var matchWords: [String] {
        var out: [String] = []
        if let m = sourceMAC { out.append("src-mac=\(m)") }
        if let m = destinationMAC { out.append("dst-mac=\(m)") }
        if let e = etherType { out.append("ethertype=\(Self.formatEtherType(e))") }
        if let v = vlan { out.append("vlan=\(v)") }
        if let p = sourceIP { out.append("src-ip=\(p)") }
        if let p = destinationIP { out.append("dst-ip=\(p)") }
        if let p = ipProtocol { out.append("proto=\(Self.formatProto(p))") }
        if let r = sourcePorts { out.append("src-port=\(Self.formatRange(r))") }
        if let r = destinationPorts { out.append("dst-port=\(Self.formatRange(r))") }
        if established { out.append("established=yes") }
        if let t = icmpType { out.append("icmp-type=\(t)") }
        return out
    }

    public var text: String { words.joined(separator: " ") }

    // MARK: - Values

    static func error(_ message: String) -> SwitchError { SwitchError(.invalidArgument, message) }

    static func mac(_ v: String, _ word: String) throws(SwitchError) -> MACAddress {
        guard let m = MACAddress(v) else { throw error("\(word): not a MAC address like 52:54:00:12:34:56") }
        return m
    }

    static func etherType(_ v: String, _ word: String) throws(SwitchError) -> UInt16 {
        switch v {
        case "ipv4": return 0x0800
        case "ipv6": return 0x86DD
        case "arp": return 0x0806
        default: break
        }
        let n: UInt16?
        if v.hasPrefix("0x") { n = UInt16(v.dropFirst(2), radix: 16) } else { n = UInt16(v) }
        guard let n, n >= 0x0600 else { throw error("\(word): expected ipv4, ipv6, arp or an EtherType 0x0600-0xffff like 0x88cc") }
        return n
    }

    static func prefix(_ v: String, _ word: String) throws(SwitchError) -> IPPrefix {
        guard let p = IPPrefix(v) else {
            throw error("\(word): not an IPv4 or IPv6 address or prefix like 10.0.0.5, 10.0.1.0/24 or 2001:db8::/64")
        }
        return p
    }

    static let protocolNames: [(String, UInt8)] = [("tcp", 6), ("udp", 17), ("icmp", 1), ("icmpv6", 58), ("sctp", 132)]

    static func proto(_ v: String, _ word: String) throws(SwitchError) -> UInt8 {
        if let p = protocolNames.first(where: { $0.0 == v }) { return p.1 }
        guard let n = UInt8(v), String(n) == v else { throw error("\(word): expected tcp, udp, icmp, icmpv6, sctp or a protocol number 0-255") }
        return n
    }

    static func portRange(_ v: String, _ word: String) throws(SwitchError) -> ClosedRange<UInt16> {
        let ends = v.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let lo = UInt16(ends[0]), String(lo) == ends[0] else {
            throw error("\(word): expected a port 0-65535 or a range like 1024-65535")
        }
        var hi = lo
        if ends.count == 2 {
            guard let h = UInt16(ends[1]), String(h) == ends[1], h >= lo else {
                throw error("\(word): expected a range like 1024-65535 (ports 0-65535, low to high)")
            }
            hi = h
        }
        return lo...hi
    }

    public static func formatEtherType(_ e: UInt16) -> String {
        switch e {
        case 0x0800: "ipv4"
        case 0x86DD: "ipv6"
        case 0x0806: "arp"
        default: "0x" + String(e, radix: 16)
        }
    }

    public static func formatProto(_ p: UInt8) -> String { protocolNames.first { $0.1 == p }?.0 ?? String(p) }

    static func formatRange(_ r: ClosedRange<UInt16>) -> String { r.lowerBound == r.upperBound ? "\(r.lowerBound)" : "\(r.lowerBound)-\(r.upperBound)" }
}

/// A port's ACL: its rules and each direction's default action (allow when not set).
///
/// Text form in the port settings: `acl=RULE,RULE,...` (each rule's words separated by spaces, see
/// ``ACLRule``), `acl-default-in=allow|deny`, `acl-default-out=allow|deny`.
public struct PortACL: Sendable, Equatable {
    /// Kept in evaluation order: by direction, then priority, then id.
    public private(set) var rules: [ACLRule]
    public var defaultIn: ACLAction?
    public var defaultOut: ACLAction?

    /// Most rules per port (both directions together).
    public static let maxRules = 1024

    public init(rules: [ACLRule] = [], defaultIn: ACLAction? = nil, defaultOut: ACLAction? = nil) {
        self.rules = []
        self.defaultIn = defaultIn
        self.defaultOut = defaultOut
        for r in rules { _ = try? add(r) }
    }

    public var isEmpty: Bool { rules.isEmpty && defaultIn == nil && defaultOut == nil }

    public func defaultAction(_ d: ACLDirection) -> ACLAction { (d == .in ? defaultIn : defaultOut) ?? .allow }

    /// Adds `rule`, giving it the next free id when it has none and, when it has no priority, the
    /// direction's highest priority plus 10 (so it is evaluated last). Returns the rule as added.
    @discardableResult
    public mutating func add(_ rule: ACLRule) throws(SwitchError) -> ACLRule {
        guard rules.count < Self.maxRules else { throw ACLRule.error("port ACL full: \(Self.maxRules) rules at most") }
        if let p = rule.problem { throw ACLRule.error(p) }
        var r = rule
        if r.id == 0 { r.id = (rules.map(\.id).max() ?? 0) + 1 }
        guard !rules.contains(where: { $0.id == r.id }) else { throw SwitchError(.exists, "ACL rule id \(r.id) already exists on the port") }
        if r.priority == 0 {
            r.priority = min((rules.filter { $0.direction == r.direction }.map(\.priority).max() ?? 0) + 10, ACLRule.maxPriority)
        }
        rules.append(r)
        rules.sort { a, b in
            a.direction != b.direction ? a.direction == .in : a.priority != b.priority ? a.priority < b.priority : a.id < b.id
        }
        return r
    }

    /// Removes rule `id`; notFound if there is none.
    public mutating func remove(id: Int) throws(SwitchError) {
        guard let i = rules.firstIndex(where: { $0.id == id }) else {
            throw SwitchError(.notFound, "no ACL rule \(id) on the port (rules: \(rules.isEmpty ? "none" : rules.map { String($0.id) }.joined(separator: ", ")))")
        }
        rules.remove(at: i)
    }

    public mutating func removeAllRules() { rules = [] }

    /// Rules of one direction, in evaluation order.
    public func rules(_ d: ACLDirection) -> [ACLRule] { rules.filter { $0.direction == d } }

    /// `acl=` value: the rules' text joined by commas (empty when there are none).
    public var rulesText: String { rules.map(\.text).joined(separator: ",") }

    /// Parses an `acl=` value (rules separated by commas; `none` or empty: no rules).
    public static func parseRules(_ value: String, word: String) throws(SwitchError) -> [ACLRule] {
        if value.isEmpty || value == "none" { return [] }
        var acl = PortACL()
        for (k, part) in value.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            do throws(SwitchError) {
                try acl.add(try ACLRule(String(part)))
            } catch {
                throw ACLRule.error("acl rule \(k + 1) ('\(part)'): \(error.message)")
            }
        }
        _ = word
        return acl.rules
    }
}
