import ControlProtocol
import Foundation

/// Per-port rates between two snapshots of `show`. Counters count from the daemon's start
/// (`startTime`): when it changed between the two, the daemon restarted, and the later counters
/// are taken from zero over the time since that start, so a restart never shows as a negative or
/// huge rate.
struct PortRates {
    var name: String
    var vm: String
    var framesInPerSecond: Double
    var bitsInPerSecond: Double
    var framesOutPerSecond: Double
    var bitsOutPerSecond: Double
    var dropsPerSecond: Double
    /// The drop with the most frames in the interval: "direction reason [reporter]"; "-" if none.
    var topDrop: String

    static func between(_ old: SwitchSnapshot?, _ new: SwitchSnapshot, seconds: Double) -> [PortRates] {
        let restarted = old == nil || old?.startTime != new.startTime
        let span = max(restarted ? new.uptimeSeconds : seconds, 0.001)
        let before = restarted ? [:] : Dictionary(old!.ports.map { ($0.name, $0.counters) }, uniquingKeysWith: { a, _ in a })
        return new.ports.map { p in
            // A port created (or re-created) in the interval counts from zero.
            let o = before[p.name].flatMap { $0.framesIn <= p.counters.framesIn && $0.framesOut <= p.counters.framesOut ? $0 : nil } ?? PortCounters()
            let c = p.counters
            var dropDeltas: [(PortCounters.DropKey, UInt64)] = []
            for (k, v) in c.drops {
                let d = v &- min(v, o.drops[k] ?? 0)
                if d > 0 { dropDeltas.append((k, d)) }
            }
            let top = dropDeltas.max { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 > $1.0) }
            return PortRates(name: p.name, vm: p.nic?.vmName.isEmpty == false ? p.nic!.vmName : "-",
                             framesInPerSecond: Double(c.framesIn - o.framesIn) / span,
                             bitsInPerSecond: Double(c.bytesIn &- min(c.bytesIn, o.bytesIn)) * 8 / span,
                             framesOutPerSecond: Double(c.framesOut - o.framesOut) / span,
                             bitsOutPerSecond: Double(c.bytesOut &- min(c.bytesOut, o.bytesOut)) * 8 / span,
                             dropsPerSecond: Double(dropDeltas.reduce(0) { $0 + $1.1 }) / span,
                             topDrop: top.map { "\($0.0.direction) \($0.0.reason) [\($0.0.reporter)]" } ?? "-")
        }
    }

    /// 1234 -> "1234", 12345 -> "12.3k", 1.5e9 -> "1.50G": SI units, at most 5 characters.
    static func human(_ v: Double) -> String {
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        for (scale, suffix) in units where v >= scale * 10 || (v >= scale && scale >= 1e6) {
            let x = v / scale
            return (x >= 100 ? String(format: "%.0f", x) : x >= 10 ? String(format: "%.1f", x) : String(format: "%.2f", x)) + suffix
        }
        return v >= 100 || v == v.rounded() ? String(format: "%.0f", v) : String(format: "%.1f", v)
    }
}

/// Sleeps `seconds` (an interval a user asked for between two samples, not synchronisation).
func pause(seconds: Double) {
    var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var rest = timespec()
    while nanosleep(&ts, &rest) != 0 && errno == EINTR { ts = rest }
}

extension PortRates: Encodable {
    private enum Keys: String, CodingKey { case port, vm, framesInPerSecond, bitsInPerSecond, framesOutPerSecond, bitsOutPerSecond, dropsPerSecond, topDrop }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(name, forKey: .port)
        try c.encode(vm, forKey: .vm)
        try c.encode(framesInPerSecond, forKey: .framesInPerSecond)
        try c.encode(bitsInPerSecond, forKey: .bitsInPerSecond)
        try c.encode(framesOutPerSecond, forKey: .framesOutPerSecond)
        try c.encode(bitsOutPerSecond, forKey: .bitsOutPerSecond)
        try c.encode(dropsPerSecond, forKey: .dropsPerSecond)
        try c.encode(topDrop, forKey: .topDrop)
    }
}

/// One drop counter row of `tapswitchctl drops`.
struct DropRow: Encodable {
    var port: String
    var direction: String
    var reason: String
    var reporter: String
    var frames: UInt64
    /// `--follow`: frames since the previous line for this counter.
    var delta: UInt64?
    var time: String?

    static func rows(_ s: SwitchSnapshot, ports filter: Set<String>) -> [DropRow] {
        var out: [DropRow] = []
        for p in s.ports where filter.isEmpty || filter.contains(p.name) {
            for (k, v) in p.counters.drops.sorted(by: { $0.key < $1.key }) {
                out.append(DropRow(port: p.name, direction: k.direction.description, reason: k.reason, reporter: k.reporter, frames: v))
            }
        }
        if filter.isEmpty, let sw = s.dataPlane?.switchDrops {
            for (k, v) in sw.drops.sorted(by: { $0.key < $1.key }) {
                out.append(DropRow(port: "(switch)", direction: k.direction.description, reason: k.reason, reporter: k.reporter, frames: v))
            }
        }
        // A mirror's copies dropped for room: not the destination's drops, a row of their own.
        if filter.isEmpty {
            for m in s.mirrors ?? [] where m.drops > 0 {
                out.append(DropRow(port: "(mirror \(m.mirror.name))", direction: "egress", reason: "mirrored copy not taken by \(m.mirror.to) (no room or not connected)",
                                   reporter: "port-mirror", frames: m.drops))
            }
        }
        return out
    }

    var key: String { "\(port)\u{0}\(direction)\u{0}\(reason)\u{0}\(reporter)" }
}
