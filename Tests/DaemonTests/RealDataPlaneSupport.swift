import FakeVM
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
import Locking
#endif

/// A ``FakeVM`` attached to a VM's TAP, shareable between threads: the lock lets one thread at a time
/// use the (non-Sendable) FakeVM. Blocking: call it from a thread of its own (``offPool(_:)``), never
/// for long on the cooperative pool.
final class GuestNIC: Sendable {
    let tap: String
    let mac: [UInt8]
    private let vm: Locked<FakeVM?>

    /// Attaches to `tap` as QEMU does (carrier goes up).
    init(tap: String, mac: String) throws {
        self.tap = tap
        guard let bytes = TestFrames.parseMAC(mac) else { throw TestHelperError("'\(mac)' is not a MAC address") }
        self.mac = bytes
        vm = Locked(try FakeVM(tap: tap))
    }

    func send(_ frame: [UInt8]) throws {
        try vm.withLock { vm in
            guard let vm else { throw TestHelperError("FakeVM on \(tap) is closed") }
            try vm.send(frame)
        }
    }

    /// The first frame within `timeout` for which `match` holds (others are discarded); nil on timeout.
    func receive(timeout: Duration, where match: ([UInt8]) -> Bool) throws -> [UInt8]? {
        let deadline = ContinuousClock.now + timeout
        return try vm.withLock { vm in
            guard let vm else { throw TestHelperError("FakeVM on \(tap) is closed") }
            while true {
                let remaining = ContinuousClock.now.duration(to: deadline)
                guard let frame = try vm.receive(timeout: max(remaining, .zero)) else { return nil }
                if match(frame) { return frame }
                if remaining <= .zero { return nil }
            }
        }
    }

    /// Detaches (carrier goes down). Idempotent.
    func close() {
        vm.withLock { vm in
            vm?.close()
            vm = nil
        }
    }
}

/// Test frames: EtherType 0x88b5, payload `tswdreal` + a 32-bit token (one per exchange or flow) + a
/// 32-bit sequence number. Anything else on a TAP (there should be nothing) is ignored by the tests.
enum Probe {
    static let magic = Array("tswdreal".utf8)

    static func frame(dst: [UInt8], src: [UInt8], token: UInt32, seq: UInt32) -> [UInt8] {
        TestFrames.ethernet(dst: dst, src: src, etherType: 0x88b5, payload: magic + bytes(token) + bytes(seq))
    }

    /// (token, seq) of a probe frame, nil for anything else.
    static func parse(_ frame: [UInt8]) -> (token: UInt32, seq: UInt32)? {
        guard frame.count >= 14 + 16, frame[12] == 0x88, frame[13] == 0xb5, Array(frame[14..<22]) == magic else { return nil }
        return (word(frame, 22), word(frame, 26))
    }

    private static func bytes(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    private static func word(_ f: [UInt8], _ i: Int) -> UInt32 {
        UInt32(f[i]) << 24 | UInt32(f[i + 1]) << 16 | UInt32(f[i + 2]) << 8 | UInt32(f[i + 3])
    }
}

/// A deliberately dumb control-socket client: raw bytes in, raw reply lines out. Blocking; run it on a
/// thread of its own (``offPool(_:)``).
enum RawControlClient {
    /// Connects, sends `bytes` (stopping quietly at the first send error: the server may close early on an
    /// oversized request), optionally half-closes, then reads reply lines until EOF (10 s timeout).
    /// With `abandon` it closes right after sending, without reading (a client that vanishes).
    static func exchange(path: String, _ bytes: [UInt8], halfClose: Bool = false, abandon: Bool = false) throws -> [String] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestHelperError("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw TestHelperError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: path.utf8) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw TestHelperError("connect \(path): \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += n
        }
        if abandon { return [] }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            reply += chunk[0..<n]
        }
        return String(decoding: reply, as: UTF8.self).split(separator: "\n").map(String.init)
    }
}

/// `ip link show NAME` exits 0: the device exists (in this namespace).
func linkExists(_ name: String) async throws -> Bool {
    try await offPool { try Shell.run(["ip", "link", "show", "dev", name]).status == 0 }
}
