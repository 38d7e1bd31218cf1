import ControlProtocol
import Foundation
import ServiceSupport

/// What one scrape shows, gathered at scrape time from counters the switch keeps anyway (nothing is
/// counted for metrics on the packet path).
public struct MetricsSources: Sendable {
    public var snapshot: SwitchSnapshot
    public var extensions: [ExtensionInfo]
    public var requests: RequestMetrics.Snapshot
    /// Times the daemon started before this run (from the state directory).
    public var restarts: UInt64

    public init(snapshot: SwitchSnapshot, extensions: [ExtensionInfo], requests: RequestMetrics.Snapshot, restarts: UInt64) {
        self.snapshot = snapshot
        self.extensions = extensions
        self.requests = requests
        self.restarts = restarts
    }
}

/// Renders the Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`, then samples.
/// Names follow Prometheus conventions: `tapswitch_` prefix, base units (bytes, seconds),
/// `_total` on counters.
///
/// Why not swift-prometheus's registry: its metrics are objects incremented as events happen and
/// registered per label set; here every value already exists in the switch's own counters (read
/// at scrape time so the packet loop pays nothing) and ports come and go with their labels, so a
/// scrape is a pure function of one snapshot.
public enum PrometheusText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ m: MetricsSources) -> String {
        var out = Writer()
        let s = m.snapshot

        out.family("tapswitch_build_info", .gauge, "tapswitchd's version (value 1).")
        out.sample("tapswitch_build_info", [("version", TapswitchVersion.current)], 1)
        out.family("tapswitch_daemon_start_time_seconds", .gauge, "When this tapswitchd started (Unix time); every counter counts from then.")
        out.sample("tapswitch_daemon_start_time_seconds", [], s.startTime ?? Date().timeIntervalSince1970 - s.uptimeSeconds)
        out.family("tapswitch_daemon_restarts_total", .counter, "Times tapswitchd started before this run with the same state directory.")
        out.sample("tapswitch_daemon_restarts_total", [], Double(m.restarts))

        out.family("tapswitch_ports", .gauge, "Ports on the switch.")
        out.sample("tapswitch_ports", [], Double(s.ports.count))
        let portFamilies: [(String, String, (PortCounters) -> UInt64)] = [
            ("tapswitch_port_in_frames_total", "Frames received from the port into the switch.", { $0.framesIn }),
            ("tapswitch_port_in_bytes_total", "Bytes received from the port into the switch.", { $0.bytesIn }),
            ("tapswitch_port_out_frames_total", "Frames delivered to the port.", { $0.framesOut }),
            ("tapswitch_port_out_bytes_total", "Bytes delivered to the port.", { $0.bytesOut }),
        ]
        for (name, help, value) in portFamilies {
            out.family(name, .counter, help)
            for p in s.ports { out.sample(name, portLabels(p), Double(value(p.counters))) }
        }
        out.family("tapswitch_port_drops_total", .counter,
                   "Frames dropped at the port, by direction (ingress: the port sent it; egress: it was for the port), reason and the extension or core stage that dropped it.")
        for p in s.ports {
            for (k, v) in p.counters.drops.sorted(by: { $0.key < $1.key }) {
                out.sample("tapswitch_port_drops_total", portLabels(p) + dropLabels(k), Double(v))
            }
        }
        out.family("tapswitch_port_connected", .gauge, "1 while the port's NIC is connected (or the port is a host port).")
        for p in s.ports { out.sample("tapswitch_port_connected", portLabels(p), p.nic.map { $0.state == .connected ? 1 : 0 } ?? 1) }

        out.family("tapswitch_extension_enabled", .gauge, "Extensions in the stack (value 1), by class.")
        for e in m.extensions where e.enabled {
            out.sample("tapswitch_extension_enabled", [("extension", e.name), ("class", e.extensionClass.rawValue)], 1)
        }
        out.family("tapswitch_extension_events_total", .counter, "An extension's own counters (what `tapswitchctl extensions` lists), by name.")
        for e in m.extensions where e.enabled {
            for c in e.counters { out.sample("tapswitch_extension_events_total", [("extension", e.name), ("event", c.name)], Double(c.value)) }
        }
        var dropsByExtension: [String: UInt64] = [:]
        for p in s.ports { for (k, v) in p.counters.drops { dropsByExtension[k.reporter, default: 0] += v } }
        out.family("tapswitch_extension_drops_total", .counter, "Frames dropped or excluded, by the extension or core stage that reported it (all ports).")
        for (name, v) in dropsByExtension.sorted(by: { $0.key < $1.key }) { out.sample("tapswitch_extension_drops_total", [("extension", name)], Double(v)) }

        out.family("tapswitch_mac_table_entries", .gauge, "Addresses in the MAC table.")
        out.sample("tapswitch_mac_table_entries", [], Double(s.fdbEntries))
        out.family("tapswitch_mac_table_capacity", .gauge, "Addresses the MAC table holds at most ([switch] mac_table_size).")
        out.sample("tapswitch_mac_table_capacity", [], Double(s.settings.macTableSize))
        let ringFull = s.ports.reduce(UInt64(0)) { sum, p in
            sum + p.counters.drops.filter { $0.key.reporter == "device" && $0.key.reason == "receive ring full" }.values.reduce(0, +)
        }
        out.family("tapswitch_ring_full_drops_total", .counter, "Frames the kernel dropped because a port's receive ring was full (all ports).")
        out.sample("tapswitch_ring_full_drops_total", [], Double(ringFull))
        if let dp = s.dataPlane {
            out.family("tapswitch_mac_moves_total", .counter, "Addresses that moved to another port.")
            out.sample("tapswitch_mac_moves_total", [], Double(dp.macMoves))
            out.family("tapswitch_loop_batches_total", .counter, "Batches of frames the packet loop ran through the extension stack.")
            out.sample("tapswitch_loop_batches_total", [], Double(dp.batches))
            out.family("tapswitch_loop_busy_poll_seconds_total", .counter, "Time the packet loop spent busy-polling ([switch] busy_poll_us).")
            out.sample("tapswitch_loop_busy_poll_seconds_total", [], dp.busyPollSeconds)
            out.family("tapswitch_floods_without_port_total", .counter, "Broadcast, multicast and unknown-unicast frames that found no other port in their VLAN (not drops).")
            out.sample("tapswitch_floods_without_port_total", [], Double(dp.floodsWithoutPort))
            out.family("tapswitch_injected_frames_total", .counter, "Frames extensions sent with the switch itself as source.")
            out.sample("tapswitch_injected_frames_total", [], Double(dp.injectedFrames))
            out.family("tapswitch_switch_drops_total", .counter, "Drops of frames the switch itself sent, by direction, reason and reporter.")
            for (k, v) in dp.switchDrops.drops.sorted(by: { $0.key < $1.key }) {
                out.sample("tapswitch_switch_drops_total", dropLabels(k), Double(v))
            }
        }

        // Mirrored copies are counted apart from the ports' frames and drops.
        let mirrors = s.mirrors ?? []
        let mirrorFamilies: [(String, String, (MirrorInfo) -> UInt64)] = [
            ("tapswitch_mirror_frames_total", "Copies a port mirror sent to its destination.", { $0.frames }),
            ("tapswitch_mirror_bytes_total", "Bytes of the copies a port mirror sent to its destination.", { $0.bytes }),
            ("tapswitch_mirror_drops_total", "Copies a port mirror dropped: no room left at the destination after its normal frames, destination not connected, or more than the mirror holds per batch.", { $0.drops }),
        ]
        for (name, help, value) in mirrorFamilies {
            out.family(name, .counter, help)
            for m in mirrors { out.sample(name, [("mirror", m.mirror.name), ("to", m.mirror.to)], Double(value(m))) }
        }
        out.family("tapswitch_mirror_active", .gauge, "1 while a port mirror copies (its destination and a source exist).")
        for m in mirrors { out.sample("tapswitch_mirror_active", [("mirror", m.mirror.name), ("to", m.mirror.to)], m.active ? 1 : 0) }

        out.family("tapswitch_control_requests_total", .counter, "Control requests answered, by operation and result (ok or the error code).")
        for (k, v) in m.requests.requests.sorted(by: { $0.key < $1.key }) {
            out.sample("tapswitch_control_requests_total", [("op", k.op), ("result", k.result)], Double(v))
        }
        out.family("tapswitch_control_request_duration_seconds", .histogram, "Time to answer a control request, by operation.")
        for (op, l) in m.requests.latency.sorted(by: { $0.key < $1.key }) {
            for (i, bound) in RequestMetrics.bucketBounds.enumerated() {
                out.sample("tapswitch_control_request_duration_seconds_bucket", [("op", op), ("le", number(bound))], Double(l.buckets[i]))
            }
            out.sample("tapswitch_control_request_duration_seconds_bucket", [("op", op), ("le", "+Inf")], Double(l.count))
            out.sample("tapswitch_control_request_duration_seconds_sum", [("op", op)], l.sum)
            out.sample("tapswitch_control_request_duration_seconds_count", [("op", op)], Double(l.count))
        }
        return out.text
    }

    /// port (the TAP or device name), vm, nic (the NIC's MAC), vlan (as `tapswitchctl show` prints it).
    static func portLabels(_ p: PortInfo) -> [(String, String)] {
        [("port", p.name), ("vm", p.nic?.vmName ?? ""), ("nic", p.nic.map { $0.assignedMAC.description } ?? p.mac?.description ?? ""),
         ("vlan", vlanLabel(p.vlanPolicy))]
    }

    static func dropLabels(_ k: PortCounters.DropKey) -> [(String, String)] {
        [("direction", k.direction.description), ("reason", k.reason), ("extension", k.reporter)]
    }

    static func vlanLabel(_ policy: VLANPolicy?) -> String {
        switch policy {
        case nil: ""
        case .untagged: "untagged"
        case .access(let id): String(id)
        case .trunk(let allowed, let native):
            "trunk:" + (allowed.isEmpty ? "none" : PortSettings.formatVLANs(allowed)) + (native.map { "+native\($0)" } ?? "")
        }
    }

    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    enum Kind: String { case counter, gauge, histogram }

    struct Writer {
        var text = ""
        mutating func family(_ name: String, _ kind: Kind, _ help: String) {
            text += "# HELP \(name) \(escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
        }
        mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
            text += name
            if !labels.isEmpty {
                text += "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
            }
            text += " " + number(value) + "\n"
        }
    }

    /// Label values escape backslash, double quote and newline.
    static func escapeLabel(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }
}
