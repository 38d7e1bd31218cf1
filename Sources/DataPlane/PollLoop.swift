import Dispatch
import LinuxNet
import SwitchCore

/// The packet loop's readiness wait: one level-triggered ``EventPoll`` over the ports' drivers and
/// the link-event source, waited on *inside* the packet-loop queue, in slices.
///
/// A slice is one block on the serial queue: it waits in `epoll_wait`, runs the handlers of the
/// ready fds and the deadline handler (extension timers) when due, and keeps waiting until some
/// other block is queued (``async(_:)`` writes an eventfd that is in the set), the tick is due, or
/// the loop stops. The wait's timeout is the earlier of the tick and the next deadline, so timers
/// fire on an idle switch, within about a millisecond (epoll's resolution). Then it re-queues itself behind that
/// block and returns, so control requests still run between two batches, on the same queue.
/// (`EventPoll` and `EventFD` are LinuxNet's owners of the epoll set and the eventfd.)
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
        let handle: PollHandle
    }

    let queue: DispatchQueue
    private static let wakeToken = UInt64.max
    private static let maxEvents = 64
    private let poll: EventPoll
    private let wake: EventFD

    // Queue-confined state.
    private var handlers: [((PollEvents) -> Void)?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private var tickHandler: (() -> Void)?
    /// The earliest extension-timer deadline (ns on ``now()``'s clock) and what to run then.
    private var deadlineSource: (() -> UInt64?)?
    private var deadlineHandler: (() -> Void)?
    private var tickInterval: UInt64 = 1_000_000_000
    private var nextTick: UInt64 = 0
    private var stopped = false
    /// Adaptive busy-poll window (ns): after traffic, `epoll_wait(0)` is repeated this long before
    /// sleeping. See ``busyPollLimit``.
    private var pollWindow: UInt64 = 0
    /// Time spent spinning (busy-poll) so far, in nanoseconds; read on the queue.
    private(set) var busyPollNanoseconds: UInt64 = 0
    /// Upper bound of the busy-poll window, 0 = never spin. Queue-confined.
    var busyPollLimit: UInt64 {
        didSet { pollWindow = min(pollWindow, busyPollLimit) }
    }

    /// - Parameter busyPollLimit: longest spin before sleeping, in ns (0 disables it).
    init(queue: DispatchQueue, busyPollLimit: UInt64 = 50_000) throws(SwitchError) {
        self.queue = queue
        self.busyPollLimit = busyPollLimit
        do {
            poll = try EventPoll(capacity: Self.maxEvents)
            wake = try EventFD()
            try poll.add(wake.pollHandle, token: Self.wakeToken)
        } catch {
            throw SwitchError("cannot set up the packet loop's wait", cause: error)
        }
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
        async { [self] in halt() }
    }

    /// On the queue: ends the loop now and drops every handler. Why at once: the handlers refer to
    /// their owner unowned, and a slice already queued before an asynchronous ``stop()`` would
    /// still call them after the owner is gone (found under TSan: "unowned reference ... already
    /// destroyed" from a deadline handler after `SwitchRuntime.shutdown()`).
    func halt() {
        dispatchPrecondition(condition: .onQueue(queue))
        stopped = true
        tickHandler = nil
        deadlineSource = nil
        deadlineHandler = nil
        for slot in handlers.indices { handlers[slot] = nil }
    }

    /// Wakes the slice so it yields the queue.
    private func poke() { wake.signal() }

    // MARK: - On the queue

    /// Calls `handler` with the events whenever `handle` is readable (or failed or hung up),
    /// level-triggered: a handler that leaves data unread is called again next round.
    func watch(_ handle: PollHandle, _ handler: @escaping (PollEvents) -> Void) throws(SwitchError) -> Watch {
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
        let watch = Watch(slot: slot, generation: generations[slot], handle: handle)
        do { try poll.add(handle, token: UInt64(watch.generation) << 32 | UInt64(slot)) } catch {
            release(slot)
            throw SwitchError("cannot watch a port in the packet loop", cause: error)
        }
        return watch
    }

    /// Stops watching; call before the handle's owner closes. Idempotent for a given watch.
    func unwatch(_ watch: Watch) {
        guard watch.slot < handlers.count, generations[watch.slot] == watch.generation, handlers[watch.slot] != nil else { return }
        poll.remove(watch.handle)
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

    /// Runs `handler` on the queue as soon as `next()` (an absolute time on ``now()``'s clock, nil
    /// for none) has passed; the loop sleeps no longer than that. `next` is asked before every
    /// sleep, so it must be cheap.
    func setDeadlines(next: @escaping () -> UInt64?, _ handler: @escaping () -> Void) {
        deadlineSource = next
        deadlineHandler = handler
    }

    /// The loop's monotonic clock in nanoseconds (also the one deadlines are given on).
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Waits for events: first a non-blocking look, then a bounded spin, then sleep.
    ///
    /// Why spin: waking a sleeping thread costs a scheduler round trip (an IPI, and on a VM a
    /// vCPU wake-up) of tens of microseconds, twice per frame through the switch. When the next
    /// frame tends to come within the window (request/response, bursts), spinning catches it.
    /// The window adapts like cpuidle-haltpoll: it doubles when the sleep that followed was
    /// shorter than the limit (spinning would have caught it) and halves when it was longer,
    /// so steady traffic with long gaps (and an idle switch) does not pay for spinning.
    @inline(__always)
    private func wait(now: UInt64) -> Int {
        var n = poll.wait(timeoutMilliseconds: 0)
        if n != 0 { return n }
        if pollWindow > 0 {
            let deadline = now &+ pollWindow
            var t = now
            defer { busyPollNanoseconds &+= t &- now }
            repeat {
                // Yield between looks: on a small host the VMs' threads need this CPU more.
                EventPoll.yieldProcessor()
                n = poll.wait(timeoutMilliseconds: 0)
                t = Self.now()
                if n != 0 { return n }
            } while t < deadline
        }
        // Round up so the wait does not end just before the deadline.
        let sleepStart = Self.now()
        var wakeAt = nextTick
        if let due = deadlineSource?(), due < wakeAt { wakeAt = due }
        let timeout = Int32(clamping: (wakeAt &- min(sleepStart, wakeAt) + 999_999) / 1_000_000)
        n = poll.wait(timeoutMilliseconds: timeout)
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
            if let due = deadlineSource?(), now >= due {
                deadlineHandler?()
                continue
            }
            let n = wait(now: now)
            var yield = false
            for i in 0..<n where !stopped {
                let token = poll.token(i)
                if token == Self.wakeToken {
                    wake.drain()
                    yield = true
                    continue
                }
                let slot = Int(token & 0xffff_ffff)
                guard slot < handlers.count, generations[slot] == UInt32(token >> 32), let handler = handlers[slot] else { continue }
                handler(poll.events(i))
            }
            if yield { break }
        }
        if stopped { return }
        // Behind whatever was queued meanwhile. Weak: a runtime dropped without shutdown() ends at its next tick.
        queue.async { [weak self] in self?.slice() }
    }
}
