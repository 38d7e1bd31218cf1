import TapswitchKit

/// Filtering extension: drops frames whose EtherType (after an outer VLAN tag) is blocked, on
/// ingress from every port, each counted per port under the reason "EtherType 0xXXXX blocked".
///
/// Settings (`[extensions.ethertype-filter]`, `tapswitchctl extension set ethertype-filter ...`):
/// `blocked`: EtherTypes as hex (`0x88cc`) or decimal, comma-separated or a TOML array; at most
/// ``maxBlocked``, each at least 0x0600 (smaller values are 802.3 lengths, not types).
///
/// Per frame it only reads the parsed EtherType and scans a small preallocated table: no
/// allocation, no ARC traffic.
///
/// ## Concurrency model
/// Confined to the queue that owns the switch it is enabled on (the packet loop's queue, or the
/// test's thread for an `EmbeddedSwitch`): ingress and counters run there. Not `Sendable`.
public final class EtherTypeFilter: SwitchExtension {
    public static let extensionName = "ethertype-filter"
    public static let maxBlocked = 16

    /// The registry entry a `tapswitchd` build adds (see `TapswitchDaemonMain.run(extensions:)`).
    public static let registryEntry = ExtensionRegistry.Entry(
        name: extensionName, extensionClass: .filtering,
        summary: "drops frames by EtherType (blocked)",
        settings: [ExtensionRegistry.Setting("blocked", "EtherTypes to drop, e.g. 0x88cc,0x86dd (default none)")]
    ) { (s) throws(SwitchError) in try EtherTypeFilter(settings: s) }

    public let name = EtherTypeFilter.extensionName
    public let extensionClass = ExtensionClass.filtering

    /// The blocked types, in the order given.
    public let blocked: [UInt16]
    // Preallocated so the per-frame path touches no Swift array (no retain, no bounds check).
    private let types: UnsafeMutablePointer<UInt16>
    private let reasons: UnsafeMutablePointer<DropReason>
    private let hits: UnsafeMutablePointer<UInt64>
    private let count: Int
    private var reasonsRegistered = false

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["blocked"])
        let list = try Self.parse(settings.values["blocked"] ?? "")
        blocked = list
        count = list.count
        types = .allocate(capacity: max(count, 1))
        types.initialize(from: list, count: count)
        hits = .allocate(capacity: max(count, 1))
        hits.initialize(repeating: 0, count: count)
        reasons = .allocate(capacity: max(count, 1))
    }

    deinit {
        types.deallocate()
        hits.deallocate()
        reasons.deallocate()
    }

    /// `0x88cc,2054` -> [0x88CC, 0x0806]; an error names the bad entry.
    static func parse(_ text: String) throws(SwitchError) -> [UInt16] {
        var out: [UInt16] = []
        if text.allSatisfy(\.isWhitespace) { return out }
        for word in text.split(separator: ",", omittingEmptySubsequences: false) {
            let w = String(word.filter { !$0.isWhitespace }).lowercased()
            let value = w.hasPrefix("0x") ? UInt16(w.dropFirst(2), radix: 16) : UInt16(w)
            guard let value, value >= 0x0600 else {
                throw SwitchError(.invalidArgument,
                                  "extension \(extensionName): blocked=\(text): '\(w)' is not an EtherType (0x0600-0xffff, hex or decimal)")
            }
            if out.contains(value) { continue }
            guard out.count < maxBlocked else {
                throw SwitchError(.invalidArgument, "extension \(extensionName): blocked=\(text): at most \(maxBlocked) EtherTypes")
            }
            out.append(value)
        }
        return out
    }

    public func attached(to sw: VirtualSwitch) {
        // Registered once per switch; the same text maps to the same reason on re-enable.
        for k in 0..<count {
            (reasons + k).initialize(to: sw.registerDropReason("EtherType \(Self.hex(types[k])) blocked (ethertype-filter)"))
        }
        reasonsRegistered = true
    }

    public func ingress(_ context: inout IngressContext) {
        guard count > 0, reasonsRegistered else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let type = batch.parsed(i).etherType
            for k in 0..<count where types[k] == type {
                context.drop(i, reason: reasons[k])
                hits[k] &+= 1
                break
            }
        }
    }

    /// `dropped` in total, then `dropped-0xXXXX` per blocked type.
    public var counters: [ExtensionCounter] {
        var total: UInt64 = 0
        var out: [ExtensionCounter] = []
        for k in 0..<count {
            total &+= hits[k]
            out.append(ExtensionCounter("dropped-\(Self.hex(types[k]))", hits[k]))
        }
        return [ExtensionCounter("dropped", total)] + out
    }

    static func hex(_ v: UInt16) -> String {
        let digits = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: 4 - digits.count) + digits
    }
}
