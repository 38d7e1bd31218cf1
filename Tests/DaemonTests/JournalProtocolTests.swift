import Foundation
import LinuxNet
import Logging
import ServiceSupport
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// journald's native protocol, received by a test datagram socket standing in for
/// /run/systemd/journal/socket: one datagram per entry, metadata as upper-case fields.
@Suite("Journal native protocol")
struct JournalProtocolTests {
    /// A bound datagram socket at `path` (the journal's side).
    static func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestHelperError("socket: \(errno)") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else { close(fd); throw TestHelperError("bind \(path): \(errno)") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Fields of one native-protocol datagram (both the `KEY=value` and the length-prefixed form).
    static func parse(_ d: [UInt8]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i < d.count {
            guard let nl = d[i...].firstIndex(of: 10) else { break }
            let line = d[i..<nl]
            if let eq = line.firstIndex(of: UInt8(ascii: "=")) {
                out[String(decoding: d[i..<eq], as: UTF8.self)] = String(decoding: d[(eq + 1)..<nl], as: UTF8.self)
                i = nl + 1
            } else {
                let key = String(decoding: line, as: UTF8.self)
                var n: UInt64 = 0
                for k in 0..<8 { n |= UInt64(d[nl + 1 + k]) << (8 * UInt64(k)) }
                let start = nl + 9
                out[key] = String(decoding: d[start..<(start + Int(n))], as: UTF8.self)
                i = start + Int(n) + 1
            }
        }
        return out
    }

    @Test("an entry arrives as one datagram with VM=, PORT=, EVENT=, EXTENSION= fields; newlines use the binary form")
    func nativeEntry() throws {
        let dir = try TempDir("tswj")
        defer { dir.remove() }
        let path = dir.file("journal.sock")
        let fd = try Self.listen(path)
        defer { close(fd) }
        let socket = try #require(JournalSocket(path: path))
        let handler = StderrLogHandler(label: "tapswitchd", level: .info, journal: true, native: socket)
        let logger = Logger(label: "tapswitchd") { _ in handler }
        logger.notice("nic-connect", metadata: ["vm": "web1", "port": "web1-0", "event": "nic-connect", "extension": "mac-spoof-guard",
                                                "detail": "two\nlines", "port-id": "7", "_SYSTEMD_UNIT": "forged"])
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        try #require(n > 0, "no datagram arrived")
        let f = Self.parse(Array(buf[0..<n]))
        #expect(f["VM"] == "web1")
        #expect(f["PORT"] == "web1-0")
        #expect(f["EVENT"] == "nic-connect")
        #expect(f["EXTENSION"] == "mac-spoof-guard")
        #expect(f["PORT_ID"] == "7")
        #expect(f["DETAIL"] == "two\nlines", "binary form keeps the newline inside the field")
        #expect(f["PRIORITY"] == "5")
        #expect(f["SYSLOG_IDENTIFIER"] == "tapswitchd")
        #expect(f["MESSAGE"]?.hasPrefix("nic-connect ") == true, "\(f)")
        #expect(f["_SYSTEMD_UNIT"] == nil && f["TSW__SYSTEMD_UNIT"] == "forged", "a client cannot set the journal's trusted fields")
        // Positive control for "nothing arrived": a journal that is not there refuses the entry.
        #expect(JournalSocket(path: dir.file("absent.sock"))?.send(Array("MESSAGE=x\n".utf8)) == false)
    }
}
