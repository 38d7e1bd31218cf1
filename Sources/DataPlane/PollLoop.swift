import CTapShim
import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// The packet loop's readiness wait: one level-triggered `epoll` set over the ports' fds and the
/// link monitor, waited on *inside* the packet-loop queue, in slices.
///
/// A slice is one block on the serial queue: it waits in `epoll_wait`, runs the handlers of the
/// ready fds, and keeps waiting until some other block is queued (``async(_:)`` writes an eventfd
/// that is in the set), the tick is due, or the loop stops. Then it re-queues itself behind that
/// block and returns, so control requests still run between two batches, on the same queue.
///
/// Why not `DispatchSourceRead`: on Linux every wake-up of a source is an `epoll_wait` on
/// libdispatch's manager thread, a hand-off to a worker thread (futex), an `ioctl(FIONREAD)` and
/// an `epoll_ctl` re-arm. Measured here that was about ten syscalls and two thread wake-ups per
/// frame at low load, and twice the Linux bridge's round-trip time. Here a wake-up is one
/// `epoll_wait` on the thread that then does the work.
///
/// ## Concurrency model
/// ``async(_:)``, ``sync(_:)`` and ``stop()`` may be called from any thread. Everything else
/// (``watch(_:_:)``, ``unwatch(_:)``, the handlers, the tick) runs on `queue`. Work must reach
/// the queue through ``async(_:)``, never `queue.async` directly: a block queued without the
/// eventfd poke waits until the next tick.
final class PollLoop: @unchecked Sendable {
    /// A registration; its slot and generation travel in `epoll_event.data`, so an event already
    /// returned for a slot that was unwatched (and maybe reused) in the same round is ignored.
    struct Watch {
        fileprivate let slot: Int
        fileprivate let generation: UInt32
        let fd: Int32
    }

    let queue: DispatchQueue
    private static let wakeToken = UInt64.max
    private static let maxEvents = 64
    private let epfd: Int32
    private let wakeFD: Int32
    private let events: UnsafeMutablePointer<epoll_event>

    // Queue-confined state.
    private var handlers: [((UInt32) -> Void)?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private var tickHandler: (() -> Void)?
    private var tickInterval: UInt64 = 1_000_000_000
    private var nextTick: UInt64 = 0
    private var stopped = false
    /// Adaptive busy-poll window (ns): after traffic, `epoll_wait(0)` is repeated this long before
    /// sleeping. See ``busyPollLimit``.
    private var pollWindow: UInt64 = 0
    /// Upper bound of the busy-poll window, 0 = never spin. Queue-confined.
    var busyPollLimit: UInt64 {
        didSet { pollWindow = min(pollWindow, busyPollLimit) }
    }

    /// - Parameter busyPollLimit: longest spin before sleeping, in ns (0 disables it).
    init(queue: DispatchQueue, busyPollLimit: UInt64 = 50_000) throws(DataPlaneError) {
        self.queue = queue
        self.busyPollLimit = busyPollLimit
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw DataPlaneError("epoll_create1 for the packet loop failed: \(String(cString: strerror(errno)))") }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else {
            let code = errno
            _ = Glibc.close(epfd)
            throw DataPlaneError("eventfd for the packet loop failed: \(String(cString: strerror(code)))")
        }
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: Self.wakeToken))
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &event)
        events = .allocate(capacity: Self.maxEvents)
    }

    deinit {
        events.deallocate()
        _ = Glibc.close(wakeFD)
        _ = Glibc.close(epfd)
    }

    /// Starts waiting (the first slice). Call once.
    func start() {
        nextTick = Self.now() &+ tickInterval
        queue.async { [weak self] in self?.slice() }
    }

    /// Runs `body` on the queue, after the current slice yields. Any thread.
    func async(_ body: @escaping @Sendable () -> Void) {
        queue.async(execute: body)
        poke()
    }

    /// Runs `body` on the queue and waits for it. Not from the queue (it would deadlock).
    func sync<T>(_ body: () throws -> T) throws -> T {
        dispatchPrecondition(condition: .notOnQueue(queue))
        // Queue first, then poke: a plain queue.sync would wait behind a slice that nobody wakes.
        return try withoutActuallyEscaping(body) { escaping in
            let call = SyncCall(escaping)
            let done = DispatchSemaphore(value: 0)
            async {
                call.run()
                done.signal()
            }
            done.wait()
            return try call.result!.get()
        }
    }

    /// Carries a non-escaping closure to the queue. It drops the closure before signalling, since
    /// the queued block may outlive `sync` by a moment and must not still hold it then.
    private final class SyncCall<T>: @unchecked Sendable {
        var body: (() throws -> T)?
        var result: Result<T, any Error>?
        init(_ body: @escaping () throws -> T) { self.body = body }
        func run() {
            result = Result { try body!() }
            body = nil
        }
    }

    /// Ends the loop after the current handler. Any thread; idempotent.
    func stop() {
        async { [self] in stopped = true }
    }

    /// Wakes the slice so it yields the queue.
    private func poke() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    // MARK: - On the queue

    /// Calls `handler` with the epoll event mask whenever `fd` is readable (or failed or hung up),
    /// level-triggered: a handler that leaves data unread is called again next round.
    func watch(_ fd: Int32, _ handler: @escaping (UInt32) -> Void) throws(DataPlaneError) -> Watch {
        dispatchPrecondition(condition: .onQueue(queue))
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            handlers[slot] = handler
        } else {
            slot = handlers.count
            handlers.append(handler)
            generations.append(0)
        }
        let watch = Watch(slot: slot, generation: generations[slot], fd: fd)
        var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: UInt64(watch.generation) << 32 | UInt64(slot)))
        guard epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) == 0 else {
            let code = errno
            release(slot)
            throw DataPlaneError("epoll_ctl(ADD) of fd \(fd) failed: \(String(cString: strerror(code)))")
        }
        return watch
    }

    /// Stops watching; call before closing the fd. Idempotent for a given watch.
    func unwatch(_ watch: Watch) {
        guard watch.slot < handlers.count, generations[watch.slot] == watch.generation, handlers[watch.slot] != nil else { return }
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, watch.fd, nil)
        release(watch.slot)
    }

    private func release(_ slot: Int) {
        handlers[slot] = nil
        generations[slot] &+= 1
        freeSlots.append(slot)
    }

    /// Runs `handler` on the queue every `interval` nanoseconds (no catching up after a stall).
    func setTick(every interval: UInt64, _ handler: @escaping () -> Void) {
        tickHandler = handler
        tickInterval = interval
        nextTick = Self.now() &+ interval
    }

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Waits for events: first a non-blocking look, then a bounded spin, then sleep.
    ///
    /// Why spin: waking a sleeping thread costs a scheduler round trip (an IPI, and on a VM a
    /// vCPU wake-up) of tens of microseconds, twice per frame through the switch. When the next
    /// frame tends to come within the window (request/response, bursts), spinning catches it.
    /// The window adapts like cpuidle-haltpoll: it doubles when the sleep that followed was
    /// shorter than the limit (spinning would have caught it) and halves when it was longer,
    /// so steady traffic with long gaps (and an idle switch) does not pay for spinning.
    @inline(__always)
    private func wait(now: UInt64) -> Int32 {
        let maxEvents = Int32(Self.maxEvents)
        var n = epoll_wait(epfd, events, maxEvents, 0)
        if n != 0 { return n }
        if pollWindow > 0 {
            let deadline = now &+ pollWindow
            repeat {
                // Yield between looks: on a small host the VMs' threads need this CPU more.
                sched_yield()
                n = epoll_wait(epfd, events, maxEvents, 0)
                if n != 0 { return n }
            } while Self.now() < deadline
        }
        // Round up so the wait does not end just before the deadline.
        let sleepStart = Self.now()
        let timeout = Int32(clamping: (nextTick &- min(sleepStart, nextTick) + 999_999) / 1_000_000)
        n = epoll_wait(epfd, events, maxEvents, timeout)
        if busyPollLimit > 0 {
            let slept = Self.now() &- sleepStart &+ pollWindow
            if slept < busyPollLimit {
                pollWindow = min(busyPollLimit, max(pollWindow &* 2, 5_000))
            } else {
                pollWindow = pollWindow < 2_000 ? 0 : pollWindow / 2
            }
        }
        return n
    }

    /// One slice: wait and dispatch until another block is queued, the tick is due or the loop stops.
    private func slice() {
        while !stopped {
            let now = Self.now()
            if now >= nextTick {
                nextTick = now &+ tickInterval
                tickHandler?()
                break  // also lets any block queued without a poke run (at worst a tick late)
            }
            let n = wait(now: now)
            if n < 0 { continue }  // EINTR; nothing else fails on a valid epoll fd
            var yield = false
            for i in 0..<Int(n) where !stopped {
                let token = events[i].data.u64
                if token == Self.wakeToken {
                    var count: UInt64 = 0
                    _ = Glibc.read(wakeFD, &count, 8)
                    yield = true
                    continue
                }
                let slot = Int(token & 0xffff_ffff)
                guard slot < handlers.count, generations[slot] == UInt32(token >> 32), let handler = handlers[slot] else { continue }
                handler(events[i].events)
            }
            if yield { break }
        }
        if stopped { return }
        // Behind whatever was queued meanwhile. Weak: a runtime dropped without shutdown() ends at its next tick.
        queue.async { [weak self] in self?.slice() }
    }
}
