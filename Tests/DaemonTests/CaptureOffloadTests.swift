import ControlProtocol
import FakeVM
import Foundation
import Pcapng
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `tapswitchctl capture` with the XDP fast path on (`[switch] offload = "xdp"`, the shipped config)
/// on real TAPs with ``FakeVM``s: only the captured port leaves the fast path, from before the
/// capture returns its first frame until it ends; its frames keep being delivered (on the slow
/// path, where the capture sees them); the other ports' flows stay offloaded throughout.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct CaptureOffloadTests {
    typealias X = XDPDefaultConfigTests

    @Test("capture on A: A's flows take the slow path and are captured and delivered, B <-> C stays offloaded; A is offloaded again after the capture")
    func captureTakesOnlyItsPortOffTheFastPath() async throws {
        try Privilege.requireNetAdmin()
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let names = UniqueNames()
        let list = ["a", "b", "c"].enumerated().map { i, r in
            X.VM(name: "k" + r, tap: names.name("k" + r), mac: String(format: "52:54:00:e8:00:%02x", i + 1))
        }
        let (tapA, tapB, tapC) = (list[0].tap, list[1].tap, list[2].tap)
        let d = try DaemonUnderTest(config: .shipped, cleanup: cleanup)
        try await d.start()
        let n = try await X().start(d, list, cleanup: cleanup)
        let (a, b, c) = (n["ka"]!, n["kb"]!, n["kc"]!)
        try await X().learn(d, [a, b, c])
        // The first frame of each flow installs its entry: a <-> b and b <-> c.
        for (from, to) in [(a, b), (b, a), (b, c), (c, b)] { #expect(try await X.exchange(from, to, count: 1).count == 1) }
        for tap in [tapA, tapB, tapC] {
            let p = try await X.path(d, tap)
            #expect(p.text.hasPrefix("fast path (xdp);"), "\(tap): \(p.text)\n\(d.log)")
        }
        let installedB = try await X.path(d, tapB).text
        #expect(installedB.contains("entries: 2 from, 2 to"), "\(installedB)")

        // When tapswitchctl capture is running (the daemon answered it), A's entries are gone; B and C keep theirs.
        let file = d.dir.file("a.pcapng")
        let capture = try await CaptureDeviceTests().startCapture(d, [tapA, "-w", file], cleanup: cleanup)
        #expect(try await X.path(d, tapA).text == "slow path: packet-capture: capture running")
        let pathB = try await X.path(d, tapB), pathC = try await X.path(d, tapC)
        #expect(pathB.text.hasPrefix("fast path (xdp);") && pathB.text.contains("entries: 1 from, 1 to"), "\(pathB.text)")
        #expect(pathC.text.hasPrefix("fast path (xdp);") && pathC.text.contains("entries: 1 from, 1 to"), "\(pathC.text)")

        // A's frames both ways are delivered, none by the fast path; B -> C still takes it.
        let fastB = try await X.path(d, tapB)
        let framesInA = try #require(try await d.port(named: tapA)).counters.framesIn
        #expect(try await X.exchange(a, b, count: 20).count == 20, "a -> b delivered during the capture")
        #expect(try await X.exchange(b, a, count: 20).count == 20, "b -> a delivered during the capture")
        #expect(try await X.exchange(b, c, count: 20).count == 20)
        let afterB = try await X.path(d, tapB)
        #expect(afterB.fastIn == pathB.fastIn + 20, "b -> c left the fast path: \(afterB.text)")
        #expect(afterB.fastOut == fastB.fastOut, "b received a's frames by the fast path: \(afterB.text)")
        #expect(try #require(try await d.port(named: tapA)).counters.framesIn == framesInA + 20)
        #expect(try await X.path(d, tapA).text == "slow path: packet-capture: capture running")

        // The capture saw every frame of A's flows (20 from A, 20 to A).
        capture.interrupt()
        try await CaptureDeviceTests().waitExit(capture, "capture on A after SIGINT")
        let packets = try Pcapng.read(Array(try Data(contentsOf: URL(fileURLWithPath: file)))).compactMap(\.packet)
        let probes = packets.compactMap { p in X.parse(p.data).map { (p.direction, $0.seq) } }
        #expect(probes.filter { $0.0 == .inbound }.count == 20 && probes.filter { $0.0 == .outbound }.count == 20,
                "captured \(probes.count) probes: \(probes)")

        // Capture over: A is offloaded again (its first frame reinstalls the entry, the next take the fast path).
        try await offPool {
            try waitUntil("A back on the fast path", timeout: .seconds(5), poll: .milliseconds(20)) {
                (try d.port(named: tapA)?.offload ?? "").hasPrefix("fast path (xdp);")
            }
        }
        #expect(try await X.exchange(a, b, count: 1).count == 1)
        let before = try await X.path(d, tapA)
        #expect(try await X.exchange(a, b, count: 20).count == 20)
        let after = try await X.path(d, tapA)
        #expect(after.fastIn == before.fastIn + 20, "a -> b is not offloaded again after the capture: \(after.text)")
    }
}
