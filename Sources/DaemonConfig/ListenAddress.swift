import ControlProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A TCP listen address, `HOST:PORT` with HOST an IPv4 literal or a bracketed IPv6 literal
/// (`127.0.0.1:9717`, `[::1]:9717`, `0.0.0.0:9717`). Names are refused so nothing depends on DNS.
/// Port 0 lets the kernel choose (the daemon logs the port it got).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    /// `[metrics] listen`'s default: loopback only.
    public static let defaultMetrics = ListenAddress(host: "127.0.0.1", port: 9717)

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String, field: String) throws(FieldError) {
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw FieldError(field: field, message: "'\(text)' is not HOST:PORT (an IPv6 address goes in brackets: [::1]:9717)")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw FieldError(field: field, message: "'\(text)' is not HOST:PORT (for example 127.0.0.1:9717; empty disables)")
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            if hostPart.contains(":") {
                throw FieldError(field: field, message: "'\(text)': put an IPv6 address in brackets, as in [::1]:9717")
            }
        }
        guard let port = UInt16(portPart) else {
            throw FieldError(field: field, message: "'\(portPart)' in '\(text)' is not a port (0..65535)")
        }
        var v4 = in_addr()
        var v6 = in6_addr()
        let host = String(hostPart)
        guard inet_pton(AF_INET, host, &v4) == 1 || (text.hasPrefix("[") && inet_pton(AF_INET6, host, &v6) == 1) else {
            throw FieldError(field: field, message: "'\(host)' in '\(text)' is not an IP address (names are not resolved)")
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
