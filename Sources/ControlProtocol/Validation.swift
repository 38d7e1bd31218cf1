/// Value checks shared by `tapswitchctl` (which names the flag), the control server (which names
/// the JSON field) and the config loader (which names `file:line`).
///
/// Each check returns the accepted value or throws a ``FieldError`` whose message quotes the bad
/// value and says what would be accepted.
public enum Validate {
    /// Linux IFNAMSIZ is 16 including the terminating NUL.
    public static let maxInterfaceNameLength = 15
    public static let mtuRange = 68...65535
    public static let vlanRange = 1...4094
    public static let maxVMNameLength = 64

    /// A network interface name: 1 to 15 characters from `A-Z a-z 0-9 _ . -`, not `.` or `..`, not
    /// starting with `-` (which `ip`, QEMU's `ifname=` and scripts would read as an option).
    public static func interfaceName(_ name: String, field: String) throws(FieldError) -> String {
        if name.isEmpty { throw FieldError(field: field, message: "interface name must not be empty") }
        if name.utf8.count > maxInterfaceNameLength {
            throw FieldError(field: field, message: "interface name '\(name)' is \(name.utf8.count) characters; the limit is \(maxInterfaceNameLength)")
        }
        if let bad = name.unicodeScalars.first(where: { !isNameScalar($0) }) {
            throw FieldError(field: field, message: "interface name '\(name)' contains '\(bad)'; allowed are A-Z a-z 0-9 _ . -")
        }
        if name == "." || name == ".." { throw FieldError(field: field, message: "'\(name)' is not a valid interface name") }
        if name.hasPrefix("-") {
            throw FieldError(field: field, message: "interface name '\(name)' starts with '-', which tools would read as an option")
        }
        return name
    }

    /// A VM name: 1 to 64 characters from `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
    public static func vmName(_ name: String, field: String) throws(FieldError) -> String {
        if name.isEmpty { throw FieldError(field: field, message: "VM name must not be empty") }
        if name.utf8.count > maxVMNameLength {
            throw FieldError(field: field, message: "VM name '\(name)' is \(name.utf8.count) characters; the limit is \(maxVMNameLength)")
        }
        if let bad = name.unicodeScalars.first(where: { !isNameScalar($0) }) {
            throw FieldError(field: field, message: "VM name '\(name)' contains '\(bad)'; allowed are A-Z a-z 0-9 _ . -")
        }
        if let first = name.unicodeScalars.first, !isAlphanumeric(first) {
            throw FieldError(field: field, message: "VM name '\(name)' must start with a letter or digit")
        }
        return name
    }

    /// A unicast MAC address for a NIC or port: six hex pairs, not multicast, not all zero.
    public static func mac(_ text: String, field: String) throws(FieldError) -> MACAddress {
        guard let mac = MACAddress(text) else {
            throw FieldError(field: field, message: "'\(text)' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)")
        }
        if mac.isMulticast {
            throw FieldError(field: field, message: "'\(text)' is a multicast address (low bit of the first octet set); a NIC needs a unicast MAC")
        }
        if mac.isZero { throw FieldError(field: field, message: "'\(text)' is the all-zero address") }
        return mac
    }

    public static func mtu(_ value: Int, field: String) throws(FieldError) -> Int {
        guard mtuRange.contains(value) else {
            throw FieldError(field: field, message: "MTU \(value) is out of range \(mtuRange.lowerBound)..\(mtuRange.upperBound)")
        }
        return value
    }

    public static func vlan(_ value: Int, field: String) throws(FieldError) -> Int {
        guard vlanRange.contains(value) else {
            throw FieldError(field: field, message: "VLAN \(value) is out of range \(vlanRange.lowerBound)..\(vlanRange.upperBound)")
        }
        return value
    }

    /// A user or group given by name (`libvirt-qemu`) or by numeric id (`64055`).
    public static func principal(_ text: String, field: String, what: String = "user") throws(FieldError) -> String {
        if text.isEmpty { throw FieldError(field: field, message: "\(what) must not be empty") }
        if text.allSatisfy(\.isASCIIDigit) {
            guard let id = UInt32(text), id != UInt32.max else {
                throw FieldError(field: field, message: "\(what) id \(text) is out of range")
            }
            return text
        }
        if text.utf8.count > 32 {
            throw FieldError(field: field, message: "\(what) name '\(text)' is longer than 32 characters")
        }
        let scalars = Array(text.unicodeScalars)
        let ok = scalars.enumerated().allSatisfy { i, s in
            if isAlphanumeric(s) || s == "_" || s == "." { return true }
            if s == "-" { return i > 0 }
            if s == "$" { return i == scalars.count - 1 && i > 0 }
            return false
        }
        guard ok else {
            throw FieldError(field: field, message: "'\(text)' is not a valid \(what) name or numeric id")
        }
        return text
    }

    /// A network namespace name as `ip netns` accepts it (a file name under /run/netns).
    public static func netnsName(_ name: String, field: String) throws(FieldError) -> String {
        if name.isEmpty { throw FieldError(field: field, message: "namespace name must not be empty") }
        if name.utf8.count > 255 { throw FieldError(field: field, message: "namespace name is longer than 255 characters") }
        if let bad = name.unicodeScalars.first(where: { !isNameScalar($0) }) {
            throw FieldError(field: field, message: "namespace name '\(name)' contains '\(bad)'; allowed are A-Z a-z 0-9 _ . -")
        }
        if name == "." || name == ".." { throw FieldError(field: field, message: "'\(name)' is not a valid namespace name") }
        return name
    }

    /// Parses a decimal integer given as text (a CLI flag or a `key=value` pair).
    public static func integer(_ text: String, field: String) throws(FieldError) -> Int {
        guard let v = Int(text) else { throw FieldError(field: field, message: "'\(text)' is not an integer") }
        return v
    }

    /// A VM NIC's type: one of the VM port types (`synthetic`, `emulated`).
    public static func nicType(_ text: String, field: String) throws(FieldError) -> PortType {
        guard let t = PortType(rawValue: text), t.isVMNIC else {
            throw FieldError(field: field, message: "'\(text)' is not a NIC type (expected one of: \(PortType.vmNICTypes.map(\.rawValue).joined(separator: ", ")))")
        }
        return t
    }

    private static func isAlphanumeric(_ s: Unicode.Scalar) -> Bool {
        (s >= "a" && s <= "z") || (s >= "A" && s <= "Z") || (s >= "0" && s <= "9")
    }

    private static func isNameScalar(_ s: Unicode.Scalar) -> Bool {
        isAlphanumeric(s) || s == "_" || s == "." || s == "-"
    }

    /// An extension name: 1-64 characters from a-z 0-9 and -.
    public static func extensionName(_ s: String, field: String) throws(FieldError) -> String {
        guard !s.isEmpty, s.count <= 64, s.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }) else {
            throw FieldError(field: field, message: "'\(s)' is not an extension name (a-z, 0-9 and -, at most 64)")
        }
        return s
    }

    /// Extension settings as `key=value` words, each key once.
    public static func extensionSettings(_ words: [String], field: String) throws(FieldError) -> [String: String] {
        var out: [String: String] = [:]
        for w in words {
            guard let eq = w.firstIndex(of: "="), eq != w.startIndex else { throw FieldError(field: field, message: "'\(w)' is not key=value") }
            let key = String(w[..<eq])
            guard out[key] == nil else { throw FieldError(field: field, message: "'\(key)' is given twice") }
            out[key] = String(w[w.index(after: eq)...])
        }
        return out
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
