import CTapShim
#if canImport(Glibc)
import Glibc
#endif

/// Linux capabilities, as bits of a 64-bit set (`1 << CAP_x`).
public struct CapabilitySet: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let chown = CapabilitySet(rawValue: 1 << 0)
    public static let setpcap = CapabilitySet(rawValue: 1 << 8)
    public static let netAdmin = CapabilitySet(rawValue: 1 << 12)
    public static let netRaw = CapabilitySet(rawValue: 1 << 13)
    public static let bpf = CapabilitySet(rawValue: 1 << 39)

    static let names: [(CapabilitySet, String)] = [(.chown, "CAP_CHOWN"), (.setpcap, "CAP_SETPCAP"), (.netAdmin, "CAP_NET_ADMIN"),
                                                   (.netRaw, "CAP_NET_RAW"), (.bpf, "CAP_BPF")]

    /// `CAP_NET_ADMIN CAP_NET_RAW`; other bits as `cap_N`.
    public var description: String {
        var parts: [String] = []
        for bit in 0..<64 where rawValue & (1 << UInt64(bit)) != 0 {
            let one = CapabilitySet(rawValue: 1 << UInt64(bit))
            parts.append(Self.names.first { $0.0 == one }?.1 ?? "cap_\(bit)")
        }
        return parts.isEmpty ? "none" : parts.joined(separator: " ")
    }
}

/// The calling process's capabilities: read them, and give up all but a few for good.
public enum ProcessCapabilities {
    public struct Sets: Sendable, Equatable {
        public var effective: CapabilitySet
        public var permitted: CapabilitySet
        public var inheritable: CapabilitySet
    }

    /// The thread's effective, permitted and inheritable sets (`capget`).
    public static func current() throws(SystemError) -> Sets {
        var header = __user_cap_header_struct(version: TS_LINUX_CAPABILITY_VERSION_3, pid: 0)
        var data = [__user_cap_data_struct](repeating: __user_cap_data_struct(), count: 2)
        guard ts_capget(&header, &data) == 0 else { throw SystemError(operation: "capget", errno: errno) }
        func join(_ k: KeyPath<__user_cap_data_struct, UInt32>) -> CapabilitySet {
            CapabilitySet(rawValue: UInt64(data[0][keyPath: k]) | UInt64(data[1][keyPath: k]) << 32)
        }
        return Sets(effective: join(\.effective), permitted: join(\.permitted), inheritable: join(\.inheritable))
    }

    /// Whether `bit` is still in the bounding set; nil past the kernel's last capability.
    static func inBoundingSet(_ bit: Int) -> Bool? {
        let r = ts_prctl(TS_PR_CAPBSET_READ, UInt(bit), 0)
        return r < 0 ? nil : r == 1
    }

    /// Keeps only `keep` (those of them the process has) and drops everything else for good:
    /// from the bounding set (so no exec can regain it), the ambient and inheritable sets, and
    /// the permitted and effective sets. Applies to the calling thread; call it at start-up before
    /// any other thread exists, or accept that threads already running keep their sets.
    ///
    /// Without `CAP_SETPCAP` (systemd's `CapabilityBoundingSet=` already shrank the bounding set, or
    /// an unprivileged user) the bounding set is left as it is; the other sets are still limited.
    /// - Returns: the capabilities kept (permitted and effective).
    @discardableResult
    public static func limit(to keep: CapabilitySet) throws(SystemError) -> CapabilitySet {
        // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below.
        var bit = try current().effective.contains(.setpcap) ? 0 : 64
        while bit < 64, let present = inBoundingSet(bit) {
            if present, !keep.contains(CapabilitySet(rawValue: 1 << UInt64(bit))) {
                guard ts_prctl(TS_PR_CAPBSET_DROP, UInt(bit), 0) == 0 else {
                    throw SystemError(operation: "prctl(PR_CAPBSET_DROP, \(bit))", errno: errno)
                }
            }
            bit += 1
        }
        // Ambient capabilities would survive an exec; EINVAL on kernels without them is fine.
        if ts_prctl(TS_PR_CAP_AMBIENT, TS_PR_CAP_AMBIENT_CLEAR_ALL, 0) != 0 && errno != EINVAL {
            throw SystemError(operation: "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno: errno)
        }
        let now = try current()
        let kept = now.permitted.intersection(keep)
        var header = __user_cap_header_struct(version: TS_LINUX_CAPABILITY_VERSION_3, pid: 0)
        var data = [__user_cap_data_struct](repeating: __user_cap_data_struct(), count: 2)
        for i in 0..<2 {
            let word = UInt32(truncatingIfNeeded: kept.rawValue >> (32 * UInt64(i)))
            data[i] = __user_cap_data_struct(effective: word, permitted: word, inheritable: 0)
        }
        guard ts_capset(&header, &data) == 0 else { throw SystemError(operation: "capset", errno: errno) }
        return kept
    }
}
