import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why talking to the daemon failed. `description` is the one line `tapswitchctl` prints.
public enum ClientError: Error, CustomStringConvertible, Equatable {
    /// The socket could not be reached (missing, refused, no permission).
    case cannotConnect(path: String, reason: String)
    /// The connection broke or timed out mid-exchange.
    case transport(String)
    /// The daemon answered with something that is not a response.
    case badResponse(String)

    public var description: String {
        switch self {
        case .cannotConnect(let path, let reason): "cannot connect to tapswitchd at \(path): \(reason)"
        case .transport(let m): "connection to tapswitchd failed: \(m)"
        case .badResponse(let m): "unexpected answer from tapswitchd: \(m)"
        }
    }
}

/// A blocking client connection to the control socket: send one request, read response lines.
///
/// Used by `tapswitchctl` and by tests. Not thread-safe: one owner at a time.
public final class ControlConnection {
    private var fd: Int32
    private var buffer = Data()
    public let path: String

    /// Connects to `path`.
    /// - Parameter timeout: send/receive timeout in seconds; nil waits forever (for `events --follow`).
    public init(path: String, timeout: Double? = 30) throws(ClientError) {
        self.path = path
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard path.utf8.count < capacity else {
            throw .cannotConnect(path: path, reason: "socket path is \(path.utf8.count) bytes; the limit is \(capacity - 1)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw .cannotConnect(path: path, reason: "socket: \(errnoText())") }
        if let timeout { Self.setTimeouts(s, seconds: timeout) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let text = errnoText()
            Glibc.close(s)
            throw .cannotConnect(path: path, reason: text)
        }
        fd = s
    }

    deinit { close() }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Sends one request line.
    public func send(_ request: ControlRequest) throws(ClientError) {
        try sendRaw(Wire.encodeLine(request))
    }

    /// Sends bytes as they are (tests use this to send malformed requests).
    public func sendRaw(_ data: Data) throws(ClientError) {
        var offset = 0
        while offset < data.count {
            let n = data.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw .transport("send: \(errnoText())")
            }
            offset += n
        }
    }

    /// Half-closes the sending side, so the server sees end of stream.
    public func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Reads one line (without the newline); nil at end of stream.
    public func readLine(limit: Int = 16 * 1024 * 1024) throws(ClientError) -> Data? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = buffer[buffer.startIndex..<nl]
                buffer = Data(buffer[buffer.index(after: nl)...])
                return Data(line)
            }
            if buffer.count > limit { throw .badResponse("response line longer than \(limit) bytes") }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw .transport("timed out waiting for the daemon") }
                throw .transport("recv: \(errnoText())")
            }
            if n == 0 {
                if buffer.isEmpty { return nil }
                let rest = buffer
                buffer = Data()
                return rest
            }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Reads the next bytes after the response lines (a capture's pcapng stream): what is buffered
    /// first, then up to 64 KiB from the socket. nil at end of stream.
    public func readBytes() throws(ClientError) -> [UInt8]? {
        if !buffer.isEmpty {
            let out = [UInt8](buffer)
            buffer = Data()
            return out
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .transport("recv: \(errnoText())")
            }
            if n == 0 { return nil }
            return Array(chunk[0..<n])
        }
    }

    /// The socket, for a signal handler that half-closes it (``shutdownWrite()`` from another thread).
    public var socketDescriptor: Int32 { fd }

    /// Reads and decodes one response; nil at end of stream.
    public func readResponse() throws(ClientError) -> ControlResponse? {
        guard let line = try readLine() else { return nil }
        do {
            return try Wire.decodeResponse(line)
        } catch {
            let text = String(decoding: line.prefix(200), as: UTF8.self)
            throw .badResponse("\(error.description): '\(text)'")
        }
    }

    /// One request, one response: the common case.
    public static func roundTrip(_ request: ControlRequest, path: String, timeout: Double = 60) throws(ClientError) -> ControlResponse {
        let c = try ControlConnection(path: path, timeout: timeout)
        defer { c.close() }
        do {
            try c.send(request)
        } catch {
            // The daemon may refuse a connection (peer credentials) and close it before the request
            // is written: its one-line reason is still waiting to be read.
            if let r = try? c.readResponse() { return r }
            throw error
        }
        guard let r = try c.readResponse() else { throw .transport("the daemon closed the connection without answering") }
        return r
    }

    private static func setTimeouts(_ s: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        _ = setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// `strerror(errno)`, e.g. "No such file or directory".
public func errnoText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
