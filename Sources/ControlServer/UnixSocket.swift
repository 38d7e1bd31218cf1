import ControlProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Low-level helpers for the control socket: bind with permissions, peer credentials, I/O with
/// deadlines. All return errors as text naming the operation, the path and `strerror`.
enum UnixSocket {
    /// Creates the parent directory, removes a stale socket, binds, sets mode 0660 and group, listens.
    ///
    /// A socket file that still accepts connections means another daemon is running: that is an
    /// error rather than a silent takeover.
    static func listen(path: String, group: gid_t?) throws(SwitchError) -> Int32 {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty, !FileManager.default.fileExists(atPath: dir) {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o755])
            } catch {
                throw SwitchError(.system, "cannot create socket directory \(dir): \(error.localizedDescription)")
            }
            // mkdir's mode is masked by the umask (systemd's UMask=0077, say): set it explicitly so
            // members of [control] group can reach the socket.
            _ = chmod(dir, 0o755)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard path.utf8.count < capacity else {
            throw SwitchError(.invalidArgument, "socket path \(path) is \(path.utf8.count) bytes; the limit is \(capacity - 1)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SwitchError(.invalidState, "\(path) exists and is not a socket; refusing to replace it")
            }
            if let live = try? ControlConnection(path: path, timeout: 1) {
                live.close()
                throw SwitchError(.exists, "another tapswitchd is already listening on \(path)")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SwitchError(.system, "socket(AF_UNIX): \(errnoText())") }
        // Bind under a restrictive umask so the socket is never briefly world-accessible.
        let oldMask = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let bindErr = errno
        umask(oldMask)
        guard rc == 0 else {
            close(fd)
            throw SwitchError(.system, "bind \(path): \(errnoText(bindErr))")
        }
        do throws(SwitchError) {
            try applyPermissions(path: path, group: group)
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
        // Non-blocking, so a connection aborted between poll and accept cannot stall the accept thread.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        guard Glibc.listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw SwitchError(.system, "listen \(path): \(errnoText(e))")
        }
        return fd
    }

    /// Mode 0660, owner root (when we are root), group `group` when given.
    static func applyPermissions(path: String, group: gid_t?) throws(SwitchError) {
        if let group {
            guard chown(path, geteuid() == 0 ? 0 : uid_t.max, group) == 0 else {
                throw SwitchError(.system, "chown \(path) to group \(group): \(errnoText())")
            }
        }
        guard chmod(path, 0o660) == 0 else { throw SwitchError(.system, "chmod 0660 \(path): \(errnoText())") }
    }

    struct PeerCredentials: Equatable {
        var pid: Int32
        var uid: uid_t
        var gid: gid_t
    }

    /// SO_PEERCRED: who is on the other end, as the kernel saw it at connect time.
    static func peerCredentials(_ fd: Int32) -> PeerCredentials? {
        // struct ucred {pid_t pid; uid_t uid; gid_t gid;} needs _GNU_SOURCE, which the Glibc module
        // lacks; it is three 32-bit fields, so read it as such.
        var cred: (UInt32, UInt32, UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout<(UInt32, UInt32, UInt32)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0, len == 12 else { return nil }
        return PeerCredentials(pid: Int32(bitPattern: cred.0), uid: cred.1, gid: cred.2)
    }

    /// Supplementary groups of a process, from /proc/PID/status (`Groups:` line).
    static func supplementaryGroups(pid: Int32) -> [gid_t] {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { gid_t($0) }
        }
        return []
    }

    /// POLLRDHUP (peer closed its writing side); a GNU extension the Glibc module does not export.
    static let pollRDHUP: Int16 = 0x2000

    /// A non-blocking, close-on-exec pipe (read end, write end); nil with errno set on failure.
    static func makePipe() -> (Int32, Int32)? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return (fds[0], fds[1])
    }

    static func setSendTimeout(_ fd: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Sends all bytes (MSG_NOSIGNAL: a vanished peer is an error, never SIGPIPE). False on failure.
    @discardableResult
    static func sendAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            guard let base = raw.baseAddress else { return true }
            var off = 0
            while off < raw.count {
                let n = send(fd, base + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                off += n
            }
            return true
        }
    }

    enum ReadResult {
        case line(Data)
        /// The peer closed before sending anything.
        case closedEmpty
        case failure(SwitchError)
    }

    /// Reads one newline-terminated line of at most `limit` bytes before `deadline`.
    static func readLine(_ fd: Int32, limit: Int, timeout: Double) -> ReadResult {
        var buffer = Data()
        let deadline = Date().addingTimeInterval(timeout)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                return .failure(SwitchError(.invalidArgument, "timed out after \(formatSeconds(timeout)) waiting for a complete request line (got \(buffer.count) bytes)"))
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let pr = poll(&pfd, 1, Int32(min(remaining * 1000, 60_000)) + 1)
            if pr < 0 {
                if errno == EINTR { continue }
                return .failure(SwitchError(.system, "poll: \(errnoText())"))
            }
            if pr == 0 { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                return .failure(SwitchError(.system, "recv: \(errnoText())"))
            }
            if n == 0 {
                if buffer.isEmpty { return .closedEmpty }
                return .failure(SwitchError(.invalidArgument, "incomplete request: the connection was closed after \(buffer.count) bytes without a newline"))
            }
            if let nl = chunk[0..<n].firstIndex(of: 0x0A) {
                buffer.append(contentsOf: chunk[0..<nl])
                if buffer.count + 1 > limit {
                    return .failure(SwitchError(.invalidArgument, "request is larger than the limit of \(limit) bytes"))
                }
                return .line(buffer)
            }
            buffer.append(contentsOf: chunk[0..<n])
            if buffer.count >= limit {
                return .failure(SwitchError(.invalidArgument, "request is larger than the limit of \(limit) bytes"))
            }
        }
    }

    static func formatSeconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s))s" : String(format: "%.1fs", s)
    }
}
