/// Parses the NIC part of `tapswitchctl vm start VM ...`.
///
/// Rule: each `--nic TAP` starts a NIC; the per-NIC flags `--mac`, `--owner`, `--group`, `--mtu`,
/// `--type` and `--vlan` apply to the most recent `--nic` before them. The same settings may be
/// given in comma form: `--nic TAP,mac=M,owner=U,group=G,mtu=N,type=T,vlan=N`, which also takes the
/// port settings (`--nic TAP,vlan-mode=trunk,allowed-vlans=10,20,dhcp-guard=on`). A setting given twice
/// for one NIC is an error, as is a per-NIC flag before the first `--nic`.
/// Both `--flag value` and `--flag=value` are accepted.
public enum NICArguments {
    /// Flags that apply to the preceding `--nic`, with their comma-form keys.
    public static let perNICFlags = ["mac", "owner", "group", "mtu", "type", "vlan"]

    public static func parse(_ tokens: [String]) throws(FieldError) -> [NICSpec] {
        var nics: [NICSpec] = []
        var seen: [Set<String>] = []
        var i = 0
        func value(for flag: String, inline: String?) throws(FieldError) -> String {
            if let inline { return inline }
            i += 1
            guard i < tokens.count, !tokens[i].hasPrefix("--") else {
                throw FieldError(field: flag, message: "missing value")
            }
            return tokens[i]
        }
        while i < tokens.count {
            let token = tokens[i]
            guard token.hasPrefix("--") else {
                throw FieldError(field: "vm start", message: "unexpected argument '\(token)' (the VM name comes first; NICs are given with --nic)")
            }
            let body = token.dropFirst(2)
            let name: String
            var inline: String?
            if let eq = body.firstIndex(of: "=") {
                name = String(body[..<eq])
                inline = String(body[body.index(after: eq)...])
            } else {
                name = String(body)
            }
            let flag = "--" + name
            if name == "nic" {
                let v = try value(for: flag, inline: inline)
                let (nic, keys) = try parseCommaForm(v)
                nics.append(nic)
                seen.append(keys)
            } else if perNICFlags.contains(name) {
                let v = try value(for: flag, inline: inline)
                guard !nics.isEmpty else {
                    throw FieldError(field: flag, message: "must follow a --nic (per-NIC flags apply to the most recent --nic)")
                }
                let last = nics.count - 1
                guard seen[last].insert(name).inserted else {
                    throw FieldError(field: flag, message: "given twice for NIC '\(nics[last].tap)'")
                }
                try apply(key: name, value: v, to: &nics[last], field: flag)
            } else {
                throw FieldError(field: flag, message: "unknown option for 'vm start' (expected --nic or one of: \(perNICFlags.map { "--" + $0 }.joined(separator: ", ")))")
            }
            i += 1
        }
        guard !nics.isEmpty else { throw FieldError(field: "--nic", message: "at least one --nic is required") }
        return nics
    }

    /// Port settings (``PortSettings``) the comma form also takes, besides ``perNICFlags``.
    // `acl` rules contain spaces and commas: they are given with `tapswitchctl acl add` or the config.
    public static let settingKeys = PortSettings.keys.filter { $0 != "vlan" && $0 != "acl" }
    /// Settings whose value is a comma list: in the comma form, words without `=` after them
    /// continue the list (`--nic t0,allowed-vlans=10,20,100-199,native-vlan=1`).
    static let listKeys: Set<String> = ["allowed-vlans", "allowed-macs", "allowed-ips"]

    static var keyList: String { perNICFlags.joined(separator: ", ") + "; port settings: " + settingKeys.joined(separator: ", ") }

    /// `TAP[,key=value...]`.
    static func parseCommaForm(_ text: String) throws(FieldError) -> (NICSpec, Set<String>) {
        let field = "--nic \(text)"
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let tap = try Validate.interfaceName(parts[0], field: "--nic")
        var nic = NICSpec(tap: tap)
        var keys = Set<String>()
        var pairs: [(key: String, value: String)] = []
        for part in parts.dropFirst() {
            guard let eq = part.firstIndex(of: "=") else {
                if let last = pairs.last, listKeys.contains(last.key) {
                    pairs[pairs.count - 1].value += "," + part
                    continue
                }
                throw FieldError(field: field, message: "'\(part)' is not key=value (keys: \(keyList))")
            }
            let key = String(part[..<eq])
            guard perNICFlags.contains(key) || settingKeys.contains(key) else {
                throw FieldError(field: field, message: "unknown key '\(key)' (keys: \(keyList))")
            }
            guard keys.insert(key).inserted else { throw FieldError(field: field, message: "key '\(key)' given twice") }
            pairs.append((key, String(part[part.index(after: eq)...])))
        }
        for (key, value) in pairs {
            if perNICFlags.contains(key) {
                try apply(key: key, value: value, to: &nic, field: field)
            } else {
                nic.settings.append("\(key)=\(value)")
            }
        }
        // One line naming the setting: the same check the daemon makes.
        do { nic.record(try nic.portSettings()) } catch { throw FieldError(field: field, message: error.message) }
        return (nic, keys)
    }

    static func apply(key: String, value: String, to nic: inout NICSpec, field: String) throws(FieldError) {
        switch key {
        case "mac": nic.mac = try Validate.mac(value, field: field)
        case "owner": nic.owner = try Validate.principal(value, field: field, what: "user")
        case "group": nic.group = try Validate.principal(value, field: field, what: "group")
        case "mtu": nic.mtu = try Validate.mtu(try Validate.integer(value, field: field), field: field)
        case "vlan": nic.vlan = try Validate.vlan(try Validate.integer(value, field: field), field: field)
        case "type": nic.type = try Validate.nicType(value, field: field)
        default: throw FieldError(field: field, message: "unknown key '\(key)'")
        }
    }
}
