import LinuxNet

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for a QEMU NIC: attaches to a TAP exactly as `-netdev tap,ifname=NAME` does and reads and
/// writes whole frames on the queue fd (one `read`/`write` per frame, like QEMU without vhost-net).
///
/// Attaching raises the TAP's carrier; ``close()`` (or `deinit`) drops it.
///
/// ## Concurrency model
/// Not `Sendable`: use an instance from one thread or task at a time. The fd and receive buffer are owned
/// by the instance.
public final class FakeVM {
    /// The TAP this VM is attached to.
    public let tap: InterfaceName
    /// Whether frames carry a leading `virtio_net_hdr` (the queue was opened with `IFF_VNET_HDR`).
    public let vnetHeader: Bool
    /// Size of the virtio-net header on this queue (the kernel default, 10 bytes).
    public static let vnetHeaderSize = 10

    private var fd: Int32
    private let buffer: UnsafeMutableRawBufferPointer

    /// Attaches to `tap` (non-blocking).
    ///
    /// `EBUSY` is retried for up to `busyRetry`: in a process whose other threads spawn programs
    /// (a test run in parallel), a child holds a copy of every fd from fork to exec, so the fd that
    /// created the TAP a moment ago may still hold its single queue.
    /// - Throws: ``SystemError`` (e.g. `EBUSY` if something else is attached to the TAP).
    public init(tap: String, vnetHeader: Bool = false, busyRetry: Duration = .seconds(1)) throws {
        self.tap = try InterfaceName(tap)
        self.vnetHeader = vnetHeader
        let deadline = ContinuousClock.now + busyRetry
        while true {
            do {
                fd = try TapDevice.attach(name: self.tap, vnetHeader: vnetHeader, nonBlocking: true)
                break
            } catch let error as SystemError where error.errno == EBUSY && ContinuousClock.now < deadline {
                usleep(10_000)
            }
        }
        buffer = .allocate(byteCount: 65536 + Self.vnetHeaderSize + 64, alignment: 16)
    }

    deinit {
        close()
        buffer.deallocate()
    }

    /// The queue fd (for offload ioctls such as ``TapDevice/setOffload(fd:csum:tso4:tso6:)``); -1 after ``close()``.
    public var fileDescriptor: Int32 { fd }

    /// Detaches from the TAP. Idempotent.
    public func close() {
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }

    /// Sends `frame` as the guest would. With ``vnetHeader`` an all-zero header (no offload) is prepended.
    public func send(_ frame: [UInt8]) throws {
        if vnetHeader {
            try send(vnetHeader: [UInt8](repeating: 0, count: Self.vnetHeaderSize), frame: frame)
        } else {
            try write(header: [], frame: frame)
        }
    }

    /// Sends `frame` preceded by `vnetHeader` (which must be ``vnetHeaderSize`` bytes; requires ``vnetHeader``).
    public func send(vnetHeader header: [UInt8], frame: [UInt8]) throws {
        precondition(vnetHeader, "send(vnetHeader:frame:) needs a FakeVM created with vnetHeader: true")
        precondition(header.count == Self.vnetHeaderSize, "virtio_net_hdr is \(Self.vnetHeaderSize) bytes, got \(header.count)")
        try write(header: header, frame: frame)
    }

    /// Waits up to `timeout` for one frame; strips the virtio-net header when enabled. Nil on timeout.
    public func receive(timeout: Duration) throws -> [UInt8]? {
        try receiveWithHeader(timeout: timeout)?.frame
    }

    /// Waits up to `timeout` for one frame and returns the virtio-net header (empty without ``vnetHeader``)
    /// and the frame. Nil on timeout.
    public func receiveWithHeader(timeout: Duration) throws -> (header: [UInt8], frame: [UInt8])? {
        guard fd >= 0 else { throw SystemError(operation: "receive", device: tap.value, errno: EBADF, detail: "FakeVM is closed") }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 {
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                let headerLength = vnetHeader ? Swift.min(Self.vnetHeaderSize, n) : 0
                return (Array(bytes[0..<headerLength]), Array(bytes[headerLength...]))
            }
            let code = errno
            if code == EINTR { continue }
            if code != EAGAIN { throw SystemError(operation: "read", device: tap.value, errno: code) }
            let remaining = clock.now.duration(to: deadline)
            if remaining <= .zero { return nil }
            var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1)
            let ready = poll(&pollFD, 1, milliseconds)
            if ready < 0 && errno != EINTR { throw SystemError(operation: "poll", device: tap.value, errno: errno) }
        }
    }

    /// Reads and discards every frame already queued; returns how many.
    @discardableResult
    public func drain() throws -> Int {
        var count = 0
        while try receiveWithHeader(timeout: .zero) != nil { count += 1 }
        return count
    }

    private func write(header: [UInt8], frame: [UInt8]) throws {
        guard fd >= 0 else { throw SystemError(operation: "send", device: tap.value, errno: EBADF, detail: "FakeVM is closed") }
        let total = header.count + frame.count
        let (written, code): (Int, Int32) = header.withUnsafeBytes { h in
            frame.withUnsafeBytes { f in
                var vectors = [
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress), iov_len: h.count),
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: f.baseAddress), iov_len: f.count),
                ]
                while true {
                    let result = writev(fd, &vectors, 2)
                    if result < 0 && errno == EINTR { continue }
                    return (result, result < 0 ? errno : 0)
                }
            }
        }
        if written < 0 { throw SystemError(operation: "write", device: tap.value, errno: code) }
        if written != total {
            throw SystemError(operation: "write", device: tap.value, errno: EIO, detail: "short write: \(written) of \(total) bytes")
        }
    }
}
