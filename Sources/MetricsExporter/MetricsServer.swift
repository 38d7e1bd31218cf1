import ControlProtocol
import Foundation
import Logging
import ServiceSupport
import Locking
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.x server for Prometheus scrapes: `GET /metrics` answers the text exposition
/// format, `GET /` a pointer to it, anything else 404 or 405. One request per connection
/// (`Connection: close`).
///
/// Slow or hostile clients cannot hold it: at most ``maxClients`` connections (more wait in the
/// kernel's backlog), a request head larger than ``maxRequestBytes`` is refused, and a connection
/// that has not sent its request within ``requestTimeout`` or not taken its answer within
/// ``responseTimeout`` is closed. Sockets are non-blocking, so one stalled client never delays another.
///
/// ## Concurrency model
/// One thread owns the listening socket and every connection: it waits in `poll` on them and on a
/// wake-up pipe that ``stop()`` writes to. Rendering awaits the daemon's async world through
/// `blockingAwait` on that thread (our own thread, never the cooperative pool). Only the
/// `stopping` flag is shared, behind a `Locked` (pthread mutex).
public final class MetricsServer: Sendable {
    public static let maxClients = 16
    public static let maxRequestBytes = 8192
    public static let requestTimeout: Double = 5
    public static let responseTimeout: Double = 10

    /// The address it listens on, as `HOST:PORT` (the port the kernel chose when asked for 0).
    public let address: String
    private let listenFD: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let stopping = Locked(false)
    private let done = DispatchSemaphore(value: 0)
    private let logger: Logger
    private let render: @Sendable () async -> String

    /// Listens on `host` (an IPv4 or IPv6 literal) and `port`, and starts serving.
    public init(host: String, port: UInt16, logger: Logger, render: @escaping @Sendable () async -> String) throws(SwitchError) {
        self.logger = logger
        self.render = render
        var a4 = sockaddr_in()
        var a6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, host, &a4.sin_addr) == 1 {
            family = AF_INET
            a4.sin_family = sa_family_t(AF_INET)
            a4.sin_port = port.bigEndian
        } else if inet_pton(AF_INET6, host, &a6.sin6_addr) == 1 {
            family = AF_INET6
            a6.sin6_family = sa_family_t(AF_INET6)
            a6.sin6_port = port.bigEndian
        } else {
            throw SwitchError(.invalidArgument, "metrics: '\(host)' is not an IPv4 or IPv6 address")
        }
        let display = family == AF_INET6 ? "[\(host)]" : host
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw SwitchError(.system, "metrics: socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 { _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size)) }
        let rc = family == AF_INET
            ? withUnsafePointer(to: &a4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            : withUnsafePointer(to: &a6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        guard rc == 0, Glibc.listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw SwitchError(.system, "metrics: cannot listen on \(display):\(port): \(String(cString: strerror(e)))")
        }
        var bound = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        // sin_port and sin6_port sit at the same offset.
        address = "\(display):\(UInt16(bigEndian: bound.sin6_port))"
        var p: [Int32] = [0, 0]
        guard pipe(&p) == 0 else {
            close(fd)
            throw SwitchError(.system, "metrics: pipe: \(String(cString: strerror(errno)))")
        }
        for e in p { Self.setNonBlockingCloseOnExec(e) }
        listenFD = fd
        wakeRead = p[0]
        wakeWrite = p[1]
        let t = Thread { [self] in serve() }
        t.name = "tapswitch-metrics"
        t.start()
    }

    /// Closes every connection and the listening socket; returns when the thread has finished.
    public func stop() {
        let first = stopping.withLock { s -> Bool in
            defer { s = true }
            return !s
        }
        guard first else { return }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
        done.wait()
        close(wakeRead)
        close(wakeWrite)
    }

    private struct Client {
        let fd: Int32
        var request: [UInt8] = []
        var response: [UInt8]? = nil
        var sent = 0
        var deadline: Double
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    private func serve() {
        var clients: [Client] = []
        defer {
            for c in clients { close(c.fd) }
            close(listenFD)
            done.signal()
        }
        var scratch = [UInt8](repeating: 0, count: 4096)
        while !stopping.withLock({ $0 }) {
            var pfds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
                        pollfd(fd: clients.count < Self.maxClients ? listenFD : -1, events: Int16(POLLIN), revents: 0)]
            for c in clients { pfds.append(pollfd(fd: c.fd, events: Int16(c.response == nil ? POLLIN : POLLOUT), revents: 0)) }
            let nearest = clients.map(\.deadline).min()
            let timeout = nearest.map { Int32(clamping: Int(max(0, ($0 - Self.now()) * 1000) + 1)) } ?? -1
            let n = poll(&pfds, nfds_t(pfds.count), timeout)
            if n < 0 && errno != EINTR { logger.error("metrics: poll failed: \(String(cString: strerror(errno)))"); return }
            if pfds[0].revents != 0 { return }
            var keep: [Client] = []
            for (k, var c) in clients.enumerated() {
                let ev = pfds[k + 2].revents
                var open = true
                if ev & Int16(POLLIN | POLLERR | POLLHUP) != 0 && c.response == nil {
                    let r = scratch.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if r > 0 {
                        c.request.append(contentsOf: scratch[0..<r])
                        if let head = Self.requestHead(c.request) {
                            c.response = respond(to: head)
                            c.deadline = Self.now() + Self.responseTimeout
                        } else if c.request.count > Self.maxRequestBytes {
                            c.response = Self.reply(431, "Request Header Fields Too Large", "request head over \(Self.maxRequestBytes) bytes\n")
                        }
                    } else if r == 0 || (errno != EAGAIN && errno != EINTR) {
                        open = false
                    }
                }
                if open, let out = c.response, ev & Int16(POLLOUT | POLLERR | POLLHUP) != 0 {
                    let r = out.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.sent, out.count - c.sent, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                    if r > 0 { c.sent += r } else if errno != EAGAIN && errno != EINTR { open = false }
                    if c.sent == out.count { open = false }
                }
                if open && Self.now() > c.deadline { open = false }
                if open { keep.append(c) } else { close(c.fd) }
            }
            clients = keep
            if pfds[1].revents != 0 {
                while clients.count < Self.maxClients {
                    let fd = accept(listenFD, nil, nil)
                    if fd < 0 { break }
                    Self.setNonBlockingCloseOnExec(fd)
                    clients.append(Client(fd: fd, deadline: Self.now() + Self.requestTimeout))
                }
            }
        }
    }

    private static func setNonBlockingCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// The request line once the head is complete (blank line seen), else nil.
    static func requestHead(_ bytes: [UInt8]) -> String? {
        guard bytes.count >= 2 else { return nil }
        var i = 1
        while i < bytes.count {
            if bytes[i] == 10 && (bytes[i - 1] == 10 || (i >= 3 && bytes[i - 1] == 13 && bytes[i - 2] == 10 && bytes[i - 3] == 13)) {
                let end = bytes.firstIndex(where: { $0 == 13 || $0 == 10 }) ?? bytes.count
                return String(decoding: bytes[0..<end], as: UTF8.self)
            }
            i += 1
        }
        return nil
    }

    private func respond(to requestLine: String) -> [UInt8] {
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return Self.reply(400, "Bad Request", "bad request line\n") }
        let method = parts[0]
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard method == "GET" || method == "HEAD" else { return Self.reply(405, "Method Not Allowed", "only GET\n", extra: "Allow: GET, HEAD\r\n") }
        let body: String
        switch path {
        case "/metrics":
            let render = self.render
            body = blockingAwait { await render() }
            return Self.reply(200, "OK", body, contentType: PrometheusText.contentType, headOnly: method == "HEAD")
        case "/":
            return Self.reply(200, "OK", "tapswitchd: metrics at /metrics\n", headOnly: method == "HEAD")
        default:
            return Self.reply(404, "Not Found", "not found; metrics are at /metrics\n", headOnly: method == "HEAD")
        }
    }

    static func reply(_ status: Int, _ text: String, _ body: String, contentType: String = "text/plain; charset=utf-8",
                      extra: String = "", headOnly: Bool = false) -> [UInt8] {
        let b = Array(body.utf8)
        let head = "HTTP/1.1 \(status) \(text)\r\nContent-Type: \(contentType)\r\nContent-Length: \(b.count)\r\n\(extra)Connection: close\r\n\r\n"
        return Array(head.utf8) + (headOnly ? [] : b)
    }
}
