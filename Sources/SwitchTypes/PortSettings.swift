/// A port's policy settings as an operator writes them: `key=value` words, the same in the config
/// file, on `vm start --nic`, in `tapswitchctl port set` and on the wire.
///
/// The typed form is the port's two standard properties (see `PortSettings(properties:)` in
/// SwitchCore): ``vlan`` (nil: the port type's default,
/// see ``VLANPolicy/defaultPolicy(for:)``) and ``security`` (only non-default when something is
/// set). ``apply(_:)`` takes a list of assignments as one change: either all apply or none (the
/// error names the key and value). ``assignments`` prints the canonical words back, and parsing
/// them gives the same settings.
///
/// Keys: `vlan-mode=access|trunk|untagged`, `vlan=N` (access, implies `vlan-mode=access`),
/// `allowed-vlans=10,20,100-199|all` and `native-vlan=N|untagged|none` (trunk, imply
/// `vlan-mode=trunk`), `mac-spoof-guard=on|off`, `allowed-macs=MAC,...`, `ip-guard=on|off`,
/// `allowed-ips=ADDR[/LEN],...`, `dhcp-snooping=on|off`, `dhcp-guard=on|off`, `router-guard=on|off`,
/// `isolated=on|off` (shorthand for `pvlan=isolated`), `pvlan=isolated|community:N|promiscuous|none`,
/// `mac-limit=N|none`; the port ACL: `acl=RULE,...` (see ``PortACL``), `acl-default-in=allow|deny`,
/// `acl-default-out=allow|deny`; storm control and policing (see ``TrafficLimits``):
/// `storm-broadcast=N`, `storm-multicast=N`, `storm-unknown=N` (frames/s), `ingress-rate=100mbit`,
/// `ingress-burst=BYTES`, `ingress-frame-rate=N`, `ingress-frame-burst=N` and the same for `egress-`.
public struct PortSettings: Sendable, Equatable {
    public var vlan: VLANPolicy?
    public var security: SecurityPolicy
    public var acl: PortACL
    public var limits: TrafficLimits

    public init(vlan: VLANPolicy? = nil, security: SecurityPolicy = SecurityPolicy(), acl: PortACL = PortACL(),
                limits: TrafficLimits = TrafficLimits()) {
        self.vlan = vlan
        self.security = security
        self.acl = acl
        self.limits = limits
    }

    public static let keys = [
        "vlan-mode", "vlan", "allowed-vlans", "native-vlan", "mac-spoof-guard", "allowed-macs", "ip-guard", "allowed-ips",
        "dhcp-snooping", "dhcp-guard", "router-guard", "isolated", "pvlan", "mac-limit",
        "acl", "acl-default-in", "acl-default-out",
    ] + TrafficLimits.keys

    /// Parses `key=value` words into settings, starting from the defaults.
    public static func parse(_ assignments: [String]) throws(SwitchError) -> PortSettings {
        var s = PortSettings()
        try s.apply(assignments)
        return s
    }

    // MARK: - Changing

    /// Applies `key=value` words in order, as one change: on any error nothing changes.
    public mutating func apply(_ assignments: [String]) throws(SwitchError) {
        var pairs: [(key: String, value: String)] = []
        for a in assignments {
            guard let eq = a.firstIndex(of: "=") else {
                throw Self.error("'\(a)': expected key=value (keys: \(Self.keys.joined(separator: ", ")))")
            }
            let key = String(a[..<eq]), value = String(a[a.index(after: eq)...])
            guard Self.keys.contains(key) else {
                throw Self.error("unknown port setting '\(key)' in '\(a)' (keys: \(Self.keys.joined(separator: ", ")))")
            }
            if pairs.contains(where: { $0.key == key }) { throw Self.error("\(a): \(key) is given twice") }
            pairs.append((key: key, value: value))
        }
        try apply(pairs)
    }

    /// Applies parsed pairs (see ``apply(_:)-([String])``).
    public mutating func apply(_ pairs: [(key: String, value: String)]) throws(SwitchError) {
        var next = self
        var vlan = VLANBuilder(next.vlan)
        var declared: (mode: VLANBuilder.Mode, by: String)? = nil
        func declare(_ mode: VLANBuilder.Mode, _ by: String) throws(SwitchError) {
            if let d = declared, d.mode != mode {
                throw Self.error("\(by): conflicts with \(d.by) (vlan-mode \(d.mode.rawValue) vs \(mode.rawValue))")
            }
            declared = (mode, by)
        }
        for (key, value) in pairs {
            let word = "\(key)=\(value)"
            switch key {
            case "vlan-mode":
                guard let m = VLANBuilder.Mode(rawValue: value) else { throw Self.error("\(word): expected access, trunk or untagged") }
                try declare(m, word)
            case "vlan":
                vlan.access = try Self.vlanID(value, word)
                try declare(.access, word)
            case "allowed-vlans":
                vlan.allowed = try Self.vlanList(value, word)
                try declare(.trunk, word)
            case "native-vlan":
                switch value {
                case "none": vlan.native = nil
                case "untagged": vlan.native = 0
                default: vlan.native = try Self.vlanID(value, word, extra: ", untagged or none")
                }
                vlan.nativeGiven = true
                try declare(.trunk, word)
            case "mac-spoof-guard": next.security.macSpoofGuard = try Self.flag(value, word)
            case "allowed-macs": next.security.allowedMACs = try Self.macList(value, word)
            case "ip-guard": next.security.ipGuard = try Self.flag(value, word)
            case "allowed-ips": next.security.allowedIPs = try Self.ipList(value, word)
            case "dhcp-snooping": next.security.dhcpSnooping = try Self.flag(value, word)
            case "dhcp-guard": next.security.dhcpGuard = try Self.flag(value, word)
            case "router-guard": next.security.routerGuard = try Self.flag(value, word)
            case "isolated":
                if try Self.flag(value, word) {
                    if let p = next.security.pvlan, p != .isolated, pairs.contains(where: { $0.key == "pvlan" }) {
                        throw Self.error("\(word): conflicts with pvlan=\(Self.format(p))")
                    }
                    next.security.pvlan = .isolated
                } else if next.security.pvlan == .isolated {
                    next.security.pvlan = nil
                }
            case "pvlan":
                let p = try Self.pvlan(value, word)
                if let iso = pairs.first(where: { $0.key == "isolated" }), (try? Self.flag(iso.value, "")) == true, p != .isolated {
                    throw Self.error("\(word): conflicts with isolated=\(iso.value)")
                }
                next.security.pvlan = p
            case "mac-limit":
                if value == "none" {
                    next.security.macLimit = nil
                } else {
                    guard let n = Int(value), SecurityPolicy.macLimitRange.contains(n) else {
                        throw Self.error("\(word): expected a number \(SecurityPolicy.macLimitRange.lowerBound)-\(SecurityPolicy.macLimitRange.upperBound) or none")
                    }
                    next.security.macLimit = n
                }
            case "acl":
                next.acl.removeAllRules()
                for r in try PortACL.parseRules(value, word: word) { try next.acl.add(r) }
            case "acl-default-in", "acl-default-out":
                guard let a = ACLAction(rawValue: value), a != .count else { throw Self.error("\(word): expected allow or deny") }
                if key == "acl-default-in" { next.acl.defaultIn = a } else { next.acl.defaultOut = a }
            case _ where TrafficLimits.keys.contains(key):
                try next.limits.set(key, value)
            default:
                throw Self.error("unknown port setting '\(key)' (keys: \(Self.keys.joined(separator: ", ")))")
            }
        }
        if let d = declared { vlan.switchMode(to: d.mode) }
        next.vlan = try vlan.resolve(declaredBy: declared?.by)
        if let problem = next.security.problem { throw Self.error(problem) }
        if let problem = next.limits.problem { throw Self.error(problem) }
        self = next
    }

    /// Puts keys back to their defaults. Any VLAN key but `native-vlan` resets the whole VLAN
    /// setting (a trunk without its allowed list is no trunk); `native-vlan` resets to none.
    public mutating func reset(_ keys: [String]) throws(SwitchError) {
        var next = self
        for key in keys {
            switch key {
            case "vlan-mode", "vlan", "allowed-vlans": next.vlan = nil
            case "native-vlan":
                if case .trunk(let allowed, _)? = next.vlan { next.vlan = .trunk(allowed: allowed, native: nil) }
            case "mac-spoof-guard": next.security.macSpoofGuard = nil
            case "allowed-macs": next.security.allowedMACs = []
            case "ip-guard": next.security.ipGuard = nil
            case "allowed-ips": next.security.allowedIPs = []
            case "dhcp-snooping": next.security.dhcpSnooping = nil
            case "dhcp-guard": next.security.dhcpGuard = nil
            case "router-guard": next.security.routerGuard = nil
            case "isolated":
                if next.security.pvlan == .isolated { next.security.pvlan = nil }
            case "pvlan": next.security.pvlan = nil
            case "mac-limit": next.security.macLimit = nil
            case "acl": next.acl.removeAllRules()
            case "acl-default-in": next.acl.defaultIn = nil
            case "acl-default-out": next.acl.defaultOut = nil
            case _ where TrafficLimits.keys.contains(key):
                try next.limits.set(key, "none")
            default:
                throw Self.error("unknown port setting '\(key)' (keys: \(Self.keys.joined(separator: ", ")))")
            }
        }
        self = next
    }

    // MARK: - Printing

    /// The canonical `key=value` words for what is set (defaults are not printed).
    public var assignments: [String] {
        var out: [String] = []
        switch vlan {
        case nil: break
        case .untagged?: out.append("vlan-mode=untagged")
        case .access(let id)?: out.append("vlan=\(id)")
        case .trunk(let allowed, let native)?:
            out.append("vlan-mode=trunk")
            out.append("allowed-vlans=\(Self.formatVLANs(allowed))")
            if let native { out.append("native-vlan=\(native == 0 ? "untagged" : String(native))") }
        }
        let s = security
        if let v = s.macSpoofGuard { out.append("mac-spoof-guard=\(Self.format(v))") }
        if !s.allowedMACs.isEmpty { out.append("allowed-macs=\(s.allowedMACs.map(\.description).joined(separator: ","))") }
        if let v = s.ipGuard { out.append("ip-guard=\(Self.format(v))") }
        if !s.allowedIPs.isEmpty { out.append("allowed-ips=\(s.allowedIPs.map(\.description).joined(separator: ","))") }
        if let v = s.dhcpSnooping { out.append("dhcp-snooping=\(Self.format(v))") }
        if let v = s.dhcpGuard { out.append("dhcp-guard=\(Self.format(v))") }
        if let v = s.routerGuard { out.append("router-guard=\(Self.format(v))") }
        if let p = s.pvlan { out.append("pvlan=\(Self.format(p))") }
        if let l = s.macLimit { out.append("mac-limit=\(l)") }
        if !acl.rules.isEmpty { out.append("acl=\(acl.rulesText)") }
        if let a = acl.defaultIn { out.append("acl-default-in=\(a.rawValue)") }
        if let a = acl.defaultOut { out.append("acl-default-out=\(a.rawValue)") }
        out += limits.assignments
        return out
    }

    /// Every setting's value in force on a port of `type`, set or default (the shipped extensions'
    /// defaults: the MAC spoofing guard on for VM ports, the other guards off), in key order;
    /// `isSet` tells which were set.
    public func effective(for type: PortType) -> [(key: String, value: String, isSet: Bool)] {
        var out: [(key: String, value: String, isSet: Bool)] = []
        let v = vlan ?? VLANPolicy.defaultPolicy(for: type)
        let vset = vlan != nil
        switch v {
        case .untagged:
            out.append(("vlan-mode", "untagged", vset))
        case .access(let id):
            out += [("vlan-mode", "access", vset), ("vlan", String(id), vset)]
        case .trunk(let allowed, let native):
            out += [("vlan-mode", "trunk", vset), ("allowed-vlans", Self.formatVLANs(allowed), vset),
                    ("native-vlan", native.map { $0 == 0 ? "untagged" : String($0) } ?? "none", vset)]
        }
        let s = security
        let vm = type == .synthetic || type == .emulated
        func flag(_ key: String, _ value: Bool?, _ def: Bool) { out.append((key, Self.format(value ?? def), value != nil)) }
        flag("mac-spoof-guard", s.macSpoofGuard, vm)
        out.append(("allowed-macs", s.allowedMACs.isEmpty ? "none" : s.allowedMACs.map(\.description).joined(separator: ","), !s.allowedMACs.isEmpty))
        flag("ip-guard", s.ipGuard, false)
        out.append(("allowed-ips", s.allowedIPs.isEmpty ? "none" : s.allowedIPs.map(\.description).joined(separator: ","), !s.allowedIPs.isEmpty))
        flag("dhcp-snooping", s.dhcpSnooping, false)
        flag("dhcp-guard", s.dhcpGuard, false)
        flag("router-guard", s.routerGuard, false)
        out.append(("pvlan", s.pvlan.map(Self.format) ?? "none", s.pvlan != nil))
        out.append(("mac-limit", s.macLimit.map(String.init) ?? "none", s.macLimit != nil))
        out.append(("acl", acl.rules.isEmpty ? "none" : acl.rulesText, !acl.rules.isEmpty))
        out.append(("acl-default-in", acl.defaultAction(.in).rawValue, acl.defaultIn != nil))
        out.append(("acl-default-out", acl.defaultAction(.out).rawValue, acl.defaultOut != nil))
        for key in TrafficLimits.keys {
            let v = limits.value(of: key)
            out.append((key, v ?? "none", v != nil))
        }
        return out
    }

    /// One setting's value as printed (nil when the key is at its default).
    public func value(of key: String) -> String? {
        assignments.first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    public static func format(_ on: Bool) -> String { on ? "on" : "off" }

    public static func format(_ p: PVLANMode) -> String {
        switch p {
        case .isolated: "isolated"
        case .community(let c): "community:\(c)"
        case .promiscuous: "promiscuous"
        }
    }

    /// `10,20,100-199`, or `all` for 1-4094.
    public static func formatVLANs(_ set: Set<VLANID>) -> String {
        if set.count == 4094 && set.allSatisfy({ (1...4094).contains($0) }) { return "all" }
        var parts: [String] = []
        let sorted = set.sorted()
        var k = 0
        while k < sorted.count {
            var e = k
            while e + 1 < sorted.count && sorted[e + 1] == sorted[e] + 1 { e += 1 }
            parts.append(e == k ? "\(sorted[k])" : "\(sorted[k])-\(sorted[e])")
            k = e + 1
        }
        return parts.joined(separator: ",")
    }

    // MARK: - Values

    static func error(_ message: String) -> SwitchError { SwitchError(.invalidArgument, message) }

    static func flag(_ value: String, _ word: String) throws(SwitchError) -> Bool {
        switch value {
        case "on", "true": return true
        case "off", "false": return false
        default: throw error("\(word): expected on or off")
        }
    }

    static func vlanID(_ value: String, _ word: String, extra: String = "") throws(SwitchError) -> VLANID {
        guard let n = UInt16(value), String(n) == value, (1...4094).contains(n) else {
            throw error("\(word): expected a VLAN id 1-4094\(extra)")
        }
        return n
    }

    static func vlanList(_ value: String, _ word: String) throws(SwitchError) -> Set<VLANID> {
        if value == "all" { return Set(1...4094) }
        guard !value.isEmpty else { throw error("\(word): expected VLAN ids like 10,20,100-199 or all") }
        var out = Set<VLANID>()
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard let lo = UInt16(ends[0]), String(lo) == ends[0], (1...4094).contains(lo) else {
                throw error("\(word): '\(part)' is not a VLAN id 1-4094 or a range like 100-199")
            }
            var hi = lo
            if ends.count == 2 {
                guard let h = UInt16(ends[1]), String(h) == ends[1], (1...4094).contains(h), h >= lo else {
                    throw error("\(word): '\(part)' is not a VLAN range like 100-199 (ids 1-4094, low to high)")
                }
                hi = h
            }
            for v in lo...hi { out.insert(v) }
        }
        return out
    }

    static func macList(_ value: String, _ word: String) throws(SwitchError) -> [MACAddress] {
        if value.isEmpty || value == "none" { return [] }
        var out: [MACAddress] = []
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            guard let m = MACAddress(String(part)) else { throw error("\(word): '\(part)' is not a MAC address like 52:54:00:12:34:56") }
            guard !m.isMulticast, !m.isZero else { throw error("\(word): \(m) is not a unicast MAC address") }
            if !out.contains(m) { out.append(m) }
        }
        guard out.count <= SecurityPolicy.maxAllowedMACs else {
            throw error("\(word): \(out.count) MACs (at most \(SecurityPolicy.maxAllowedMACs))")
        }
        return out
    }

    static func ipList(_ value: String, _ word: String) throws(SwitchError) -> [IPPrefix] {
        if value.isEmpty || value == "none" { return [] }
        var out: [IPPrefix] = []
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            guard let p = IPPrefix(String(part)) else {
                throw error("\(word): '\(part)' is not an IPv4 or IPv6 address or prefix like 10.0.0.5, 10.0.1.0/24 or 2001:db8::/64")
            }
            if !out.contains(p) { out.append(p) }
        }
        guard out.count <= SecurityPolicy.maxAllowedIPs else {
            throw error("\(word): \(out.count) addresses (at most \(SecurityPolicy.maxAllowedIPs))")
        }
        return out
    }

    static func pvlan(_ value: String, _ word: String) throws(SwitchError) -> PVLANMode? {
        switch value {
        case "none": return nil
        case "isolated": return .isolated
        case "promiscuous": return .promiscuous
        default:
            if value.hasPrefix("community:"), let n = UInt16(value.dropFirst(10)), String(n) == value.dropFirst(10), (1...4094).contains(n) {
                return .community(n)
            }
            throw error("\(word): expected isolated, community:N (N 1-4094), promiscuous or none")
        }
    }
}

/// The VLAN keys while a change is being applied: they resolve to one ``VLANPolicy`` at the end.
private struct VLANBuilder {
    enum Mode: String { case access, trunk, untagged }
    var mode: Mode?
    var access: VLANID?
    var allowed: Set<VLANID>?
    var native: VLANID?
    var nativeGiven = false

    init(_ policy: VLANPolicy?) {
        switch policy {
        case nil: break
        case .untagged?: mode = .untagged
        case .access(let id)?: mode = .access; access = id
        case .trunk(let a, let n)?: mode = .trunk; allowed = a; native = n
        }
    }

    /// Switching modes drops the settings of the mode left (unless given in the same change).
    mutating func switchMode(to m: Mode) {
        guard m != mode else { return }
        if mode == .access && m != .access { access = nil }
        if mode == .trunk && m != .trunk {
            allowed = nil
            if !nativeGiven { native = nil }
        }
        mode = m
    }

    func resolve(declaredBy word: String?) throws(SwitchError) -> VLANPolicy? {
        switch mode {
        case nil: return nil
        case .untagged?: return .untagged
        case .access?:
            guard let access else { throw PortSettings.error("\(word ?? "vlan-mode=access"): an access port needs vlan=N") }
            return .access(access)
        case .trunk?:
            guard let allowed else {
                throw PortSettings.error("\(word ?? "vlan-mode=trunk"): a trunk needs allowed-vlans=LIST (like 10,20,100-199, or all)")
            }
            return .trunk(allowed: allowed, native: native)
        }
    }
}
