import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// What an ``EventPoll`` can watch: the descriptor of a LinuxNet owner (``PacketSocket``, ``TunQueue``,
/// ``LinkMonitor``, ``EventFD``). Only LinuxNet reads the number, so no raw fd leaves this module and
/// nobody outside it can close one. Valid while its owner is open.
public struct PollHandle: Sendable, Equatable {
    let descriptor: Int32
}

/// The readiness an ``EventPoll`` reports for one handle (`EPOLLIN`, `EPOLLERR`, `EPOLLHUP`).
public struct PollEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = PollEvents(rawValue: EPOLLIN.rawValue)
    /// An error is pending (for an AF_PACKET socket: read it with ``PacketSocket/pendingError()``).
    public static let error = PollEvents(rawValue: EPOLLERR.rawValue)
    public static let hangUp = PollEvents(rawValue: EPOLLHUP.rawValue)
}

/// An owned, level-triggered `epoll` set: add handles with a 64-bit token, wait, read back tokens and events.
///
/// Waiting allocates nothing: the event array is allocated once in `init`.
///
/// ## Concurrency model
/// Not `Sendable`: add, remove and wait on one serial queue (the packet loop's). Remove a handle before its
/// owner closes (closing also drops it from the set, but only once every duplicate of the fd is closed).
public final class EventPoll {
    /// Most events one ``wait(timeoutMilliseconds:)`` returns.
    public let capacity: Int
    private let fd: Int32
    private let ready: UnsafeMutablePointer<epoll_event>

    public init(capacity: Int = 64) throws(SystemError) {
        precondition(capacity > 0, "EventPoll capacity must be positive")
        fd = try systemCall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        self.capacity = capacity
        ready = .allocate(capacity: capacity)
        ready.initialize(repeating: epoll_event(), count: capacity)
    }

    deinit {
        ready.deallocate()
        _ = Glibc.close(fd)
    }

    /// Watches `handle` for readability (errors and hang-ups are always reported), level-triggered;
    /// events for it carry `token`.
    public func add(_ handle: PollHandle, token: UInt64) throws(SystemError) {
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: token))
        try systemCall("epoll_ctl(ADD) of fd \(handle.descriptor)") { epoll_ctl(fd, EPOLL_CTL_ADD, handle.descriptor, &event) }
    }

    /// Stops watching `handle`. A handle that is not in the set is ignored.
    public func remove(_ handle: PollHandle) {
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, handle.descriptor, nil)
    }

    /// Waits up to `timeoutMilliseconds` (0: just look; -1: forever) and returns how many handles are
    /// ready (0 on timeout or a signal). Read them with ``token(_:)`` and ``events(_:)``.
    @inline(__always)
    public func wait(timeoutMilliseconds: Int32) -> Int {
        let n = epoll_wait(fd, ready, Int32(capacity), timeoutMilliseconds)
        return n < 0 ? 0 : Int(n)  // EINTR; nothing else fails on a valid epoll fd
    }

    /// The token of ready entry `i` (from the last wait).
    @inline(__always)
    public func token(_ i: Int) -> UInt64 { ready[i].data.u64 }

    /// The events of ready entry `i` (from the last wait).
    @inline(__always)
    public func events(_ i: Int) -> PollEvents { PollEvents(rawValue: ready[i].events) }

    /// Gives the CPU to another runnable thread (`sched_yield`), between two looks of a busy-poll.
    @inline(__always)
    public static func yieldProcessor() { sched_yield() }
}

/// An owned, non-blocking `eventfd` counter: ``signal()`` from any thread makes it readable until
/// ``drain()``. A wake-up source for an ``EventPoll`` (and a readiness source for in-memory devices).
///
/// ## Concurrency model
/// `Sendable`: the fd never changes and `write`/`read` on an eventfd are atomic in the kernel.
public final class EventFD: Sendable {
    private let fd: Int32

    public init() throws(SystemError) {
        fd = try systemCall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC)) }
    }

    deinit { _ = Glibc.close(fd) }

    /// Adds one to the counter: the fd becomes (or stays) readable.
    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Reads and resets the counter; 0 if it was not signalled.
    @discardableResult
    public func drain() -> UInt64 {
        var count: UInt64 = 0
        return Glibc.read(fd, &count, 8) == 8 ? count : 0
    }

    /// What an ``EventPoll`` watches (readable while signalled).
    public var pollHandle: PollHandle { PollHandle(descriptor: fd) }
}
