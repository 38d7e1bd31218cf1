import ControlProtocol
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `tapswitchctl top` in a pseudo-terminal against the device-free daemon: it draws a row per port
/// on the alternate screen, re-sorts on a key, and `q` ends it with status 0 and the terminal restored.
@Suite(.serialized, .heavy)
struct TopCommandTests {
    static let config = """
        [switch]
        name = "tsw-top"
        [metrics]
        listen = ""
        [[vm]]
        name = "topa"
          [[vm.nic]]
          tap = "topa-0"
          mac = "52:54:00:aa:10:01"
        [[vm]]
        name = "topb"
          [[vm.nic]]
          tap = "topb-0"
          mac = "52:54:00:aa:10:02"
        """

    /// Output collected from the pty's master side until `done` holds for it, or the deadline.
    static func read(_ master: Int32, into out: inout [UInt8], seconds: Double, until done: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buf = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            if done(String(decoding: out, as: UTF8.self)) { return true }
            var pfd = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 100) > 0 else { continue }
            let n = buf.withUnsafeMutableBytes { Glibc.read(master, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return done(String(decoding: out, as: UTF8.self))
    }

    @Test("top renders a row per port, sorts on a key, exits 0 on q and restores the terminal")
    func topInPseudoTerminal() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .text(Self.config), binary: "tapswitchd-fake", cleanup: cleanup)
        try await d.start()

        // script(1) (bsdutils, Essential in Debian) runs top on a fresh pseudo-terminal and relays our
        // pipe to it; its size is unset there, so top falls back to 24 rows.
        let input = Pipe()
        let output = Pipe()
        let ctl = try Products.path("tapswitchctl")
        let p = ChildProcess()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        p.arguments = ["-q", "-f", "-e", "-c", "\(ctl) --socket \(d.socket) top --interval 0.5", "/dev/null"]
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        cleanup.add("kill top") { if p.isRunning { p.terminate() } }
        let master = output.fileHandleForReading.fileDescriptor
        let keys = input.fileHandleForWriting.fileDescriptor

        var out: [UInt8] = []
        let drawn = Self.read(master, into: &out, seconds: 10) { $0.contains("topa-0") && $0.contains("topb-0") && $0.contains("RX-BPS") }
        let text = String(decoding: out, as: UTF8.self)
        #expect(drawn, "no row per port: \(text.debugDescription)")
        #expect(text.contains("\u{1b}[?1049h"), "alternate screen entered")
        #expect(text.contains("*RX-BPS"), "sorted by RX-BPS at first")
        var key = UInt8(ascii: "1")
        _ = write(keys, &key, 1)
        #expect(Self.read(master, into: &out, seconds: 5) { $0.contains("*PORT") }, "key 1 sorts by port")
        key = UInt8(ascii: "q")
        _ = write(keys, &key, 1)
        let exited = Self.read(master, into: &out, seconds: 5) { $0.contains("\u{1b}[?1049l") }
        #expect(exited, "terminal restored: \(String(decoding: out.suffix(200), as: UTF8.self).debugDescription)")
        try waitUntil("top exits", timeout: .seconds(5)) { !p.isRunning }
        #expect(p.terminationStatus == 0)

        // Not a terminal: refused with a pointer to show --interval.
        let notTTY = try await d.ctl("top")
        #expect(notTTY.status == 2 && notTTY.stderr.contains("show --interval"), "\(notTTY.stderr)")
    }
}
