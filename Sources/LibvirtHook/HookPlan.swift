import Foundation

/// Which of a domain's interfaces tapswitch owns, and the `tapswitchctl vm start` NIC options for them.
///
/// Ownership rule: an `<interface type='ethernet'>` belongs to tapswitch when its `<target dev>`
/// starts with ``tapPrefix`` (`tsw-`), or when the domain's tapswitch `<metadata>` element lists it
/// (`<interface dev='TAP'>`). Every other interface is left to libvirt. An owned interface must
/// have `managed='no'` (tapswitch creates the TAP, libvirt only opens it) and a MAC.
///
/// Port settings use libvirt's own syntax, in the metadata (libvirt 9 refuses `<vlan>` and
/// `<port isolated>` on type='ethernet' interfaces when the domain starts) or, should libvirt accept
/// them, on the interface itself, and become `vm start`'s comma-form port settings:
///   `<vlan><tag id='10'/></vlan>`                                  -> `--nic TAP,vlan=10`
///   `<vlan trunk='yes'><tag id='10'/><tag id='20' nativeMode='untagged'/></vlan>`
///                                 -> `--nic TAP,vlan-mode=trunk,allowed-vlans=10,20,native-vlan=20`
///   `<port isolated='yes'/>`                                       -> `--nic TAP,isolated=on`
public enum HookPlan {
    /// TAP names starting with this belong to tapswitch without any metadata.
    public static let tapPrefix = "tsw-"

    public struct OwnedNIC: Sendable, Equatable {
        public var dev: String
        /// Why the interface is tapswitch's: "prefix" or "metadata".
        public var reason: String
        /// `--nic TAP[,setting=value...] --mac MAC [--owner USER] [--type emulated]`, for `NICArguments.parse`.
        public var arguments: [String]
    }

    /// The owned interfaces of `domain` with their NIC options, in document order.
    /// - Parameter defaultOwner: user QEMU runs as (see ``QEMUUser``); nil leaves the TAP root-only.
    public static func ownedNICs(of domain: LibvirtDomain, defaultOwner: String?) throws(HookError) -> [OwnedNIC] {
        let devs = Set(domain.interfaces.compactMap(\.dev))
        for dev in domain.settings.keys.sorted() where !devs.contains(dev) {
            throw HookError("tapswitch metadata lists interface '\(dev)', but the domain has no <interface type='ethernet'> with <target dev='\(dev)'/>")
        }
        var result: [OwnedNIC] = []
        for iface in domain.interfaces {
            guard let dev = iface.dev else { continue }
            let meta = domain.settings[dev]
            let reason: String
            if meta != nil {
                reason = "metadata"
            } else if dev.hasPrefix(tapPrefix) {
                reason = "prefix"
            } else {
                continue
            }
            guard iface.unmanaged else {
                throw HookError("interface '\(dev)': tapswitch creates this TAP, so its <target> needs managed='no'")
            }
            guard let mac = iface.mac else {
                throw HookError("interface '\(dev)': no <mac address>; tapswitch needs the guest's MAC")
            }
            var settings = iface.inline
            if let meta {
                if meta.vlanTags != nil, iface.inline.vlanTags != nil {
                    throw HookError("interface '\(dev)': <vlan> is given both on the interface and in the tapswitch metadata")
                }
                if meta.isolated != nil, iface.inline.isolated != nil {
                    throw HookError("interface '\(dev)': <port isolated> is given both on the interface and in the tapswitch metadata")
                }
                if meta.vlanTags != nil {
                    settings.vlanTags = meta.vlanTags
                    settings.vlanTrunk = meta.vlanTrunk
                }
                settings.isolated = meta.isolated ?? settings.isolated
                settings.owner = meta.owner
            }
            var args = ["--nic", ([dev] + (try portSettings(settings, dev: dev))).joined(separator: ","), "--mac", mac]
            if let owner = settings.owner ?? defaultOwner { args += ["--owner", owner] }
            if iface.model != nil, iface.model != "virtio" { args += ["--type", "emulated"] }
            result.append(OwnedNIC(dev: dev, reason: reason, arguments: args))
        }
        return result
    }

    /// `<vlan>` and `<port>` as `key=value` port settings. Values are passed through; `vm start`
    /// validates them and names the setting in its error.
    static func portSettings(_ s: PortSettingsXML, dev: String) throws(HookError) -> [String] {
        var args: [String] = []
        if let tags = s.vlanTags {
            let trunk: Bool
            switch s.vlanTrunk {
            case nil, "no": trunk = tags.count > 1
            case "yes": trunk = true
            case let other?: throw HookError("interface '\(dev)': <vlan trunk='\(other)'> must be 'yes' or 'no'")
            }
            if tags.isEmpty { throw HookError("interface '\(dev)': <vlan> has no <tag id='N'/>") }
            if let bad = tags.first(where: { $0.id.isEmpty }) {
                throw HookError("interface '\(dev)': <tag> without id (\(bad))")
            }
            if tags.count > 1, s.vlanTrunk == "no" {
                throw HookError("interface '\(dev)': more than one <tag> needs <vlan trunk='yes'>")
            }
            if trunk {
                var native: String?
                for tag in tags {
                    switch tag.nativeMode {
                    case nil: break
                    case "untagged":
                        if native != nil { throw HookError("interface '\(dev)': more than one <tag nativeMode='untagged'>") }
                        native = tag.id
                    case "tagged":
                        throw HookError("interface '\(dev)': <tag id='\(tag.id)' nativeMode='tagged'> is not supported (tapswitch's native VLAN is untagged on the port: use nativeMode='untagged')")
                    case let other?:
                        throw HookError("interface '\(dev)': <tag nativeMode='\(other)'> must be 'untagged'")
                    }
                }
                args += ["vlan-mode=trunk", "allowed-vlans=" + tags.map(\.id).joined(separator: ",")]
                if let native { args.append("native-vlan=" + native) }
            } else {
                if tags[0].nativeMode != nil {
                    throw HookError("interface '\(dev)': nativeMode needs <vlan trunk='yes'>")
                }
                args.append("vlan=" + tags[0].id)
            }
        }
        switch s.isolated {
        case nil, "no": break
        case "yes": args.append("isolated=on")
        case let other?: throw HookError("interface '\(dev)': <port isolated='\(other)'> must be 'yes' or 'no'")
        }
        return args
    }
}

/// The user libvirt runs QEMU as, for the TAP's owner.
public enum QEMUUser {
    /// From the domain's DAC label (`USER:GROUP` or `+UID:+GID`) when libvirt has one, else the
    /// `user = "..."` setting of qemu.conf's text, else nil.
    public static func resolve(dacLabel: String?, qemuConf: String?) -> String? {
        if let label = dacLabel, let user = label.split(separator: ":").first, !user.isEmpty {
            return strip(String(user))
        }
        guard let qemuConf else { return nil }
        var found: String?
        for raw in qemuConf.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard line.hasPrefix("user"), let eq = line.firstIndex(of: "=") else { continue }
            guard line[..<eq].trimmingCharacters(in: .whitespaces) == "user" else { continue }
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if let hash = value.firstIndex(of: "#") { value = value[..<hash].trimmingCharacters(in: .whitespaces) }
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            if !value.isEmpty { found = strip(value) }
        }
        return found
    }

    /// libvirt writes numeric ids as `+N`.
    private static func strip(_ user: String) -> String {
        user.hasPrefix("+") ? String(user.dropFirst()) : user
    }
}
