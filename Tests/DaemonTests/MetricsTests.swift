import ControlProtocol
import FakeVM
import Foundation
import Locking
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `/metrics` on the real daemon with traffic between two FakeVMs: the counters rise between two
/// scrapes, drops carry their reporter, the text passes `promtool check metrics`, and slow or bad
/// HTTP clients neither stall a scrape nor get anything but an error.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct MetricsTests {
    static let macA = "52:54:00:d1:00:0a"
    static let macB = "52:54:00:d1:00:0b"

    /// A blocking HTTP exchange: sends `request`, returns everything until the server closes.
    static func http(_ port: UInt16, _ request: String, timeout: Double = 5) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestHelperError("socket: \(errno)") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw TestHelperError("connect to 127.0.0.1:\(port): errno \(errno)") }
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func scrape(_ port: UInt16) throws -> (status: String, body: String) {
        let r = try http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        guard let split = r.range(of: "\r\n\r\n") else { throw TestHelperError("no HTTP head in: \(r.prefix(200))") }
        let head = String(r[..<split.lowerBound])
        return (head.components(separatedBy: "\r\n")[0], String(r[split.upperBound...]))
    }

    /// The value of the sample whose name and labels contain every part of `match`, summed.
    static func value(_ text: String, _ name: String, _ labels: [String] = []) -> Double {
        text.split(separator: "\n").filter { line in
            line.hasPrefix(name + "{") || line.hasPrefix(name + " ")
        }.filter { line in labels.allSatisfy { line.contains($0) } }
            .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
    }

    @Test("/metrics while traffic flows: port counters rise, drops name their extension, promtool accepts the text; bad clients get errors")
    func scrapeWhileTrafficFlows() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let (ta, tb) = (names.name("ma"), names.name("mb"))
        let d = try DaemonUnderTest(config: .text("""
            [metrics]
            listen = "127.0.0.1:0"
            [extensions]
            enable = ["mac-spoof-guard"]
            """), cleanup: cleanup)
        try await d.start()
        var found: UInt16 = 0
        #expect(try await waitUntil {
            guard let line = d.logText.split(separator: "\n").first(where: { $0.contains("metrics endpoint listening") }),
                  let r = line.range(of: "address=127.0.0.1:") else { return false }
            found = UInt16(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
            return found != 0
        }, "\(d.log)")
        let port = found
        cleanup.deleteLink(ta)
        cleanup.deleteLink(tb)
        for (vm, tap, mac) in [("mva", ta, Self.macA), ("mvb", tb, Self.macB)] {
            let r = try await d.ctl("vm", "start", vm, "--nic", "\(tap),mac=\(mac)")
            try #require(r.status == 0, "vm start \(vm): \(r.stderr)")
        }
        let a = try GuestNIC(tap: ta, mac: Self.macA)
        let b = try GuestNIC(tap: tb, mac: Self.macB)
        cleanup.add("detach FakeVMs") {
            a.close()
            b.close()
        }
        try await d.waitForEvents("both connected") { evs in [ta, tb].allSatisfy { t in evs.contains { $0.kind == .nicConnect && $0.portName == t } } }

        let macA = try #require(TestFrames.parseMAC(Self.macA)), macB = try #require(TestFrames.parseMAC(Self.macB))
        let before = try await offPool { try Self.scrape(port) }
        #expect(before.status == "HTTP/1.1 200 OK")
        let portA = "port=\"\(ta)\""
        let sent = 20
        let received = try await offPool { () throws -> Int in
            for i in 0..<sent { try a.send(TestFrames.ethernet(dst: macB, src: macA, etherType: 0x88b5, payload: Array(repeating: UInt8(i), count: 64))) }
            // Spoofed source: mac-spoof-guard drops it at A's ingress.
            try a.send(TestFrames.ethernet(dst: macB, src: [0x52, 0x54, 0, 0xd1, 0, 0xee], etherType: 0x88b5, payload: Array(repeating: 0xee, count: 64)))
            var got = 0
            while got < sent, try b.receive(timeout: .seconds(3), where: { $0.count > 14 && $0[12] == 0x88 && $0[13] == 0xb5 && $0[14] != 0xee }) != nil {
                got += 1
            }
            return got
        }
        #expect(received == sent)
        var after = before
        #expect(try await waitUntil {
            after = try Self.scrape(port)
            return Self.value(after.body, "tapswitch_port_in_frames_total", [portA]) >= Self.value(before.body, "tapswitch_port_in_frames_total", [portA]) + Double(sent + 1)
        }, "in_frames did not rise by \(sent + 1):\n\(after.body)")
        let body = after.body
        #expect(Self.value(body, "tapswitch_port_in_bytes_total", [portA]) >= Self.value(before.body, "tapswitch_port_in_bytes_total", [portA]) + Double(sent * 78))
        #expect(Self.value(body, "tapswitch_port_out_frames_total", ["port=\"\(tb)\""]) >= Double(sent))
        #expect(body.contains("vm=\"mva\""), "port labels carry the VM")
        #expect(body.contains("nic=\"\(Self.macA)\""), "port labels carry the NIC's MAC")
        #expect(Self.value(body, "tapswitch_port_drops_total", [portA, "direction=\"ingress\"", "extension=\"mac-spoof-guard\""]) == 1, "\(body)")
        #expect(Self.value(body, "tapswitch_loop_batches_total") > Self.value(before.body, "tapswitch_loop_batches_total"))
        #expect(Self.value(body, "tapswitch_mac_table_entries") >= 1)
        #expect(Self.value(body, "tapswitch_control_requests_total", ["op=\"vm-start\"", "result=\"ok\""]) == 2)
        #expect(Self.value(body, "tapswitch_control_request_duration_seconds_count", ["op=\"vm-start\""]) == 2)
        #expect(Self.value(body, "tapswitch_daemon_start_time_seconds") > 1_700_000_000)
        #expect(body.contains("tapswitch_daemon_restarts_total 0"))

        // The same drop through tapswitchctl: drops (table and JSON) and show name the reporter.
        let drops = try await d.ctl("drops")
        #expect(drops.status == 0 && drops.stdout.contains(ta) && drops.stdout.contains("mac-spoof-guard"), "\(drops.stdout)\(drops.stderr)")
        let dropsJSON = try await d.ctl("drops", ta, "--json")
        #expect(dropsJSON.stdout.contains("\"reporter\" : \"mac-spoof-guard\"") || dropsJSON.stdout.contains("\"reporter\":\"mac-spoof-guard\""), "\(dropsJSON.stdout)")
        #expect(try await d.ctl("drops", "no-such-port").status == 1)
        let shown = try await d.ctl("show")
        #expect(shown.stdout.contains("[mac-spoof-guard]=1"), "\(shown.stdout)")
        // Rates over an interval while A keeps sending: A's RX-FPS is not zero, B's row is there.
        // A keeps sending until the measurement is over (a loaded machine may take seconds to start tapswitchctl).
        // The sender is a thread of its own: a task on the cooperative pool (2 threads here) starved
        // behind other suites' blocking work and sent ~9 frames/s in CI.
        let sending = Locked(true)
        async let flow = offPool { () -> Int in
            var n = 0
            while sending.withLock({ $0 }) {
                if (try? a.send(TestFrames.ethernet(dst: macB, src: macA, etherType: 0x88b5, payload: Array(repeating: 1, count: 64)))) != nil { n += 1 }
                usleep(5_000)
            }
            return n
        }
        let rates: Result<(status: Int32, stdout: String, stderr: String), any Error>
        do { rates = .success(try await d.ctl("show", "--interval", "1", "--json")) } catch { rates = .failure(error) }
        sending.withLock { $0 = false }
        let flowed = try await flow
        #expect(flowed > 20, "the sender thread sent only \(flowed) frames")
        let shownRates = try rates.get()
        let rateRows = try JSONSerialization.jsonObject(with: Data(shownRates.stdout.utf8)) as? [String: Any]
        let rowA = (rateRows?["rates"] as? [[String: Any]])?.first { $0["port"] as? String == ta }
        #expect((rowA?["framesInPerSecond"] as? Double ?? 0) > 10, "\(shownRates.stdout)\(shownRates.stderr)")
        let ratesText = try await d.ctl("show", "--interval", "0.2")
        #expect(ratesText.status == 0 && ratesText.stdout.contains("RX-BPS") && ratesText.stdout.contains(tb), "\(ratesText.stdout)")

        // A real parser: promtool (Debian's prometheus package, installed by scripts/install-deps).
        let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let tool = try #require(promtool, "promtool not installed (scripts/install-deps installs prometheus)")
        let file = try d.dir.write("metrics.txt", body)
        let check = try await offPool { try Self.run(tool, ["check", "metrics"], stdin: file) }
        #expect(check.status == 0, "promtool check metrics: \(check.output)")
        // Positive control: promtool does reject broken text.
        let broken = try d.dir.write("broken.txt", "tapswitch_x{port=\"a} 1\n")
        #expect(try await offPool { try Self.run(tool, ["check", "metrics"], stdin: broken) }.status != 0)

        // Bad clients: a silent one holds no scrape up; wrong method, unknown path and oversized heads get errors.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(silent, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(try await offPool { try Self.scrape(port) }.status == "HTTP/1.1 200 OK")
        #expect(try await offPool { try Self.http(port, "POST /metrics HTTP/1.1\r\n\r\n") }.hasPrefix("HTTP/1.1 405"))
        #expect(try await offPool { try Self.http(port, "GET /nope HTTP/1.1\r\n\r\n") }.hasPrefix("HTTP/1.1 404"))
        #expect(try await offPool { try Self.http(port, "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 10_000)) }.hasPrefix("HTTP/1.1 431"))
        #expect(try await offPool { try Self.http(port, "garbage\r\n\r\n") }.hasPrefix("HTTP/1.1 400"))
        #expect(try await d.stop() == 0, "\(d.log)")
    }

    static func run(_ path: String, _ args: [String], stdin: String) throws -> (status: Int32, output: String) {
        let p = ChildProcess()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: stdin))
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
