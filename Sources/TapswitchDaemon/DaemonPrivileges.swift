import LinuxNet

/// What start-up did to the process's capabilities.
public struct CapabilityReport: Sendable, Equatable {
    /// Permitted and effective now.
    public var kept: CapabilitySet
    /// Why the sets could not be limited (the daemon runs on with what it has).
    public var problem: String?
}

/// Least privilege for `tapswitchd`, whether systemd or a root shell started it: it keeps
/// `CAP_NET_ADMIN` (TAPs, links, netlink) and `CAP_NET_RAW` (AF_PACKET), plus `CAP_CHOWN` only
/// when a control group is configured (the socket's chown to that group), plus `CAP_BPF` when
/// `[switch] offload = "xdp"` (loading the XDP program and creating its maps; attaching it needs
/// `CAP_NET_ADMIN`, already kept), and drops every other capability from every set, the bounding
/// set included.
public enum DaemonPrivileges {
    public static func needed(controlGroup: String?, offload: Bool = false) -> CapabilitySet {
        var set: CapabilitySet = controlGroup == nil ? [.netAdmin, .netRaw] : [.netAdmin, .netRaw, .chown]
        if offload { set.insert(.bpf) }
        return set
    }

    /// Call before any thread exists (capabilities are per thread).
    public static func limit(controlGroup: String?, offload: Bool = false) -> CapabilityReport {
        let keep = needed(controlGroup: controlGroup, offload: offload)
        do throws(SystemError) {
            return CapabilityReport(kept: try ProcessCapabilities.limit(to: keep))
        } catch {
            let kept = (try? ProcessCapabilities.current().permitted) ?? []
            return CapabilityReport(kept: kept, problem: error.description)
        }
    }
}
