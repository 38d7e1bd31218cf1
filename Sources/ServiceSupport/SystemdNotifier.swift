import ControlProtocol
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The sd_notify protocol, by hand: one `AF_UNIX` datagram per message to `$NOTIFY_SOCKET`
/// (a path, or an abstract name written with a leading `@`).
///
/// Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every call is a no-op.
/// Messages: `READY=1`, `STATUS=…`, `STOPPING=1`, `RELOADING=1` with `MONOTONIC_USEC` (systemd ≥ 253
/// uses it to match the reload with its `READY=1`; older versions ignore it), `WATCHDOG=1`.
public struct SystemdNotifier: Sendable {
    /// The socket address as given in the environment, or nil.
    public let socketPath: String?
    /// How often systemd expects `WATCHDOG=1`, from `$WATCHDOG_USEC` (honouring `$WATCHDOG_PID`).
    public let watchdogInterval: Duration?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        watchdogInterval = Self.watchdogInterval(environment: environment, pid: getpid())
    }

    /// `$WATCHDOG_USEC` as a duration, or nil when unset, zero, malformed or meant for another pid.
    public static func watchdogInterval(environment: [String: String], pid: Int32) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let p = environment["WATCHDOG_PID"], !p.isEmpty {
            guard let owner = Int32(p), owner == pid else { return nil }
        }
        return .microseconds(Int64(clamping: usec))
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends one message (newline-separated assignments). Returns the error text on failure.
    @discardableResult
    public func notify(_ message: String) -> String? {
        guard let socketPath else { return nil }
        return Self.send(message, to: socketPath)
    }

    public func ready(status: String? = nil) {
        notify("READY=1" + (status.map { "\nSTATUS=\($0)" } ?? ""))
    }

    public func status(_ text: String) { notify("STATUS=\(text)") }

    public func stopping(status: String? = nil) {
        notify("STOPPING=1" + (status.map { "\nSTATUS=\($0)" } ?? ""))
    }

    public func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        notify("RELOADING=1\nMONOTONIC_USEC=\(usec)")
    }

    public func watchdog() { notify("WATCHDOG=1") }

    /// A heartbeat that forwards to `WATCHDOG=1`, or nil when systemd runs no watchdog for us.
    public func makeHeartbeat() -> Heartbeat? {
        guard let watchdogInterval, isEnabled else { return nil }
        let notifier = self
        return Heartbeat(watchdogInterval: watchdogInterval) { notifier.watchdog() }
    }

    static func send(_ message: String, to path: String) -> String? {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        // '@' names an abstract socket: the name starts with a NUL byte and is not NUL-terminated.
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { return "NOTIFY_SOCKET path too long" }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: \(errnoText())" }
        defer { close(fd) }
        let rc = message.utf8CString.withUnsafeBufferPointer { msg in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, msg.baseAddress, msg.count - 1, Int32(MSG_NOSIGNAL), $0, len)
                }
            }
        }
        return rc < 0 ? "sendto \(path): \(errnoText())" : nil
    }
}

/// Liveness pings fed from the packet loop.
///
/// The backend calls ``beat()`` from its loop (any thread, e.g. the DataPlane queue) at least every
/// ``interval``, also when idle. ``beat()`` costs one clock read and one atomic load; at most once
/// per half watchdog period it sends `WATCHDOG=1`. If the loop stalls, pings stop and systemd
/// restarts the daemon (`WatchdogSec=` in the unit).
public final class Heartbeat: Sendable {
    /// The longest the backend may go without calling ``beat()``: a quarter of the watchdog period.
    public let interval: Duration
    private let minGapNanos: UInt64
    private let lastSent = Atomic<UInt64>(0)
    private let sendPing: @Sendable () -> Void
    private let beats = Atomic<UInt64>(0)

    public init(watchdogInterval: Duration, send: @escaping @Sendable () -> Void) {
        interval = watchdogInterval / 4
        minGapNanos = UInt64(Self.nanos(watchdogInterval / 2))
        sendPing = send
    }

    public func beat() {
        beats.add(1, ordering: .relaxed)
        let now = Self.monotonicNanos()
        let last = lastSent.load(ordering: .relaxed)
        guard last == 0 || now &- last >= minGapNanos else { return }
        // Only the thread that wins the exchange sends.
        if lastSent.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged {
            sendPing()
        }
    }

    /// How many times ``beat()`` was called (diagnostics, tests).
    public var beatCount: UInt64 { beats.load(ordering: .relaxed) }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    package static func nanos(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
