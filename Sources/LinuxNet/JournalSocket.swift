#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket to systemd-journald's native protocol socket: one `sendto` per log entry
/// (`KEY=value` lines; see systemd's "Native Journal Protocol"). Entries larger than a datagram
/// may carry are the caller's to shorten; nothing here blocks for long (the socket is non-blocking:
/// a journal that cannot keep up loses entries rather than stalling the daemon).
///
/// ## Concurrency model
/// Immutable after init (one fd and the address); `sendto` on a datagram socket is safe from any
/// thread, so it is `Sendable`. The fd is closed by `deinit`.
public final class JournalSocket: Sendable {
    public static let defaultPath = "/run/systemd/journal/socket"
    private let fd: Int32
    private let address: sockaddr_un

    /// nil when the path does not fit a socket address or no socket can be made.
    public init?(path: String = JournalSocket.defaultPath) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { return nil }
        fd = s
        address = addr
    }

    deinit { close(fd) }

    /// Sends one entry; false when the journal did not take it (absent, full, too large).
    public func send(_ entry: [UInt8]) -> Bool {
        var addr = address
        let n = entry.withUnsafeBytes { bytes in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return n == entry.count
    }
}
