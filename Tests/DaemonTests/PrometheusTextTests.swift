import ControlProtocol
import Foundation
import MetricsExporter
import ServiceSupport
import Testing
import TestSupport

/// The exposition text without a daemon: label escaping, histogram shape, and the Grafana
/// dashboard in examples/ naming only metrics the exporter writes.
@Suite struct PrometheusTextTests {
    static func sample() -> MetricsSources {
        var c = PortCounters(framesIn: 3, bytesIn: 300, framesOut: 2, bytesOut: 200)
        c.drops[.init(direction: .ingress, reason: "say \"no\"\\\nnow", reporter: "mac-spoof-guard")] = 4
        let nic = NICInfo(type: .synthetic, vmName: "web1", mtu: 1500, assignedMAC: MACAddress("52:54:00:00:00:01")!, state: .connected)
        let port = PortInfo(id: PortID(1), name: "web1-0", friendlyName: "web1/web1-0", type: .synthetic, state: .created,
                            vlanPolicy: .access(10), nic: nic, counters: c)
        let mirror = MirrorInfo(mirror: MirrorSpec(name: "m1", source: ["web1-0"], to: "ids0"), active: true, frames: 9, bytes: 900, drops: 1)
        let snap = SwitchSnapshot(settings: SwitchSettings(), uptimeSeconds: 5, fdbEntries: 1, ports: [port],
                                  dataPlane: DataPlaneCounters(batches: 7, busyPollSeconds: 0.5), startTime: 1_800_000_000, mirrors: [mirror])
        let requests = RequestMetrics()
        requests.record(op: "vm-start", result: "ok", seconds: 0.003)
        requests.record(op: "vm-start", result: "exists", seconds: 0.2)
        return MetricsSources(snapshot: snap, extensions: [ExtensionInfo(name: "mac-spoof-guard", extensionClass: .filtering, position: 0,
                                                                         counters: [ExtensionCounter("dropped", 4)])],
                              requests: requests.snapshot(), restarts: 2)
    }

    @Test("labels are escaped, histograms are cumulative with +Inf, counters carry _total")
    func text() {
        let t = PrometheusText.render(Self.sample())
        #expect(t.contains(#"tapswitch_port_in_frames_total{port="web1-0",vm="web1",nic="52:54:00:00:00:01",vlan="10"} 3"#), "\(t)")
        #expect(t.contains(#"reason="say \"no\"\\\nnow",extension="mac-spoof-guard"} 4"#), "\(t)")
        #expect(t.contains(#"tapswitch_control_request_duration_seconds_bucket{op="vm-start",le="0.005"} 1"#))
        #expect(t.contains(#"tapswitch_control_request_duration_seconds_bucket{op="vm-start",le="0.25"} 2"#))
        #expect(t.contains(#"tapswitch_control_request_duration_seconds_bucket{op="vm-start",le="+Inf"} 2"#))
        #expect(t.contains(#"tapswitch_control_requests_total{op="vm-start",result="exists"} 1"#))
        #expect(t.contains("tapswitch_daemon_restarts_total 2\n"))
        #expect(t.contains("tapswitch_daemon_start_time_seconds 1800000000\n"))
        #expect(t.contains("tapswitch_loop_busy_poll_seconds_total 0.5\n"))
        #expect(t.contains(#"tapswitch_mirror_frames_total{mirror="m1",to="ids0"} 9"#))
        #expect(t.contains(#"tapswitch_mirror_bytes_total{mirror="m1",to="ids0"} 900"#))
        #expect(t.contains(#"tapswitch_mirror_drops_total{mirror="m1",to="ids0"} 1"#))
        #expect(t.contains(#"tapswitch_mirror_active{mirror="m1",to="ids0"} 1"#))
        for line in t.split(separator: "\n") where line.hasPrefix("# TYPE") && line.hasSuffix(" counter") {
            #expect(line.split(separator: " ")[2].hasSuffix("_total"), "\(line)")
        }
    }

    @Test("examples/grafana-dashboard.json queries only metrics the exporter writes")
    func dashboard() throws {
        let text = PrometheusText.render(Self.sample())
        let written = Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
        let json = try String(contentsOfFile: Products.repositoryRoot + "/examples/grafana-dashboard.json", encoding: .utf8)
        let used = Set(json.matches(of: /tapswitch_[a-z_]+/).map { String($0.output) })
        #expect(used.count >= 10, "\(used)")
        for name in used {
            let family = name.replacing(/_(bucket|sum|count)$/, with: "")
            #expect(written.contains(family), "the dashboard uses \(name), which /metrics does not have")
        }
    }
}
