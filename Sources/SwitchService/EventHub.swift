import ControlProtocol
import Foundation
import Locking

/// Numbers lifecycle events, keeps a bounded history and fans them out to subscribers.
///
/// Backends own one and call ``publish(_:portId:portName:nicIndex:vmName:detail:restore:)`` for
/// every lifecycle step; ``subscribe()`` hands out the history and a live stream atomically, so a
/// subscriber neither misses nor duplicates an event.
///
/// Numbers continue across daemon restarts when the daemon calls
/// ``continueNumbering(from:reserve:)``: numbers are reserved in blocks ahead of use (the reserve
/// closure writes the bound to the state directory, off the packet loop), and a clean ``finish()``
/// records the exact next number. So after a planned restart numbering is contiguous, and after a
/// crash it skips to the reserved bound but never repeats a number a follower has seen.
///
/// ## Concurrency model
/// All state (sequence counter, history ring, continuations) sits behind one `Mutex`; publishing
/// yields into the continuations while holding it, which keeps every subscriber's order equal to
/// `seq` order. `AsyncStream.Continuation.yield` never blocks (streams buffer without limit here; a
/// control client that stops reading is dropped by the server's send timeout).
public final class EventHub: Sendable {
    private struct State {
        var nextSeq: UInt64 = 1
        var history: [SwitchEvent] = []
        var subscribers: [UInt64: AsyncStream<SwitchEvent>.Continuation] = [:]
        var nextSubscriber: UInt64 = 0
        var finished = false
        /// Numbers below this are reserved on disk; nil while numbering is not persisted.
        var reservedUpTo: UInt64?
        var reserving = false
    }

    /// Numbers reserved per write (lifecycle events are a few per VM start or stop).
    static let reservationBlock: UInt64 = 1000
    private let persistence = Locked<(@Sendable (UInt64) throws -> Void)?>(nil)
    private let reserveQueue = DispatchQueue(label: "tapswitch.event-numbers", qos: .utility)

    private let state = Locked(State())
    /// How many past events ``subscribe()`` returns.
    public let historyLimit: Int

    public init(historyLimit: Int = 1000) { self.historyLimit = historyLimit }

    /// Continues numbering at `next` (what the previous run left) and persists reservations with
    /// `reserve` (called with the first number not yet reserved; it must store it durably). Call
    /// before the first event. The first reservation is made here, synchronously.
    public func continueNumbering(from next: UInt64, reserve: @escaping @Sendable (UInt64) throws -> Void) throws(SwitchError) {
        let start = max(next, 1)
        let bound = start + Self.reservationBlock
        do { try reserve(bound) } catch {
            throw (error as? SwitchError) ?? SwitchError(.system, "cannot record event numbers: \(error)")
        }
        persistence.withLock { $0 = reserve }
        state.withLock { s in
            s.nextSeq = max(s.nextSeq, start)
            s.reservedUpTo = bound
        }
    }

    /// The number the next event gets.
    public var nextSequence: UInt64 { state.withLock { $0.nextSeq } }

    /// Records and delivers one event; returns it with its sequence number and timestamp.
    @discardableResult
    public func publish(_ kind: EventKind, portId: PortID, portName: String, nicIndex: NICIndex? = nil,
                        vmName: String? = nil, detail: String? = nil, restore: Bool = false) -> SwitchEvent {
        state.withLock { s in
            let event = SwitchEvent(seq: s.nextSeq, time: Date(), kind: kind, portId: portId, portName: portName,
                                    nicIndex: nicIndex, vmName: vmName, detail: detail, restore: restore)
            s.nextSeq += 1
            if let bound = s.reservedUpTo, !s.reserving, s.nextSeq + Self.reservationBlock / 2 >= bound {
                // Half the block used: reserve the next one in the background (never on the packet loop).
                s.reserving = true
                let newBound = max(bound, s.nextSeq) + Self.reservationBlock
                reserveQueue.async { [self] in
                    let reserve = persistence.withLock { $0 }
                    let ok = (try? reserve?(newBound)) != nil
                    state.withLock { s in
                        if ok { s.reservedUpTo = newBound }
                        s.reserving = false
                    }
                }
            }
            s.history.append(event)
            if s.history.count > historyLimit { s.history.removeFirst(s.history.count - historyLimit) }
            for c in s.subscribers.values { c.yield(event) }
            return event
        }
    }

    public func subscribe() -> EventSubscription {
        let (stream, continuation) = AsyncStream<SwitchEvent>.makeStream(bufferingPolicy: .unbounded)
        let (history, id, finished) = state.withLock { s in
            let id = s.nextSubscriber
            s.nextSubscriber += 1
            if !s.finished { s.subscribers[id] = continuation }
            return (s.history, id, s.finished)
        }
        if finished {
            continuation.finish()
        } else {
            continuation.onTermination = { [weak self] _ in
                self?.state.withLock { _ = $0.subscribers.removeValue(forKey: id) }
            }
        }
        return EventSubscription(history: history, live: stream, cancel: { continuation.finish() })
    }

    /// The retained events.
    public var history: [SwitchEvent] { state.withLock { $0.history } }

    /// Number of live subscriptions (for tests and diagnostics).
    public var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    /// Ends every stream; later subscriptions get the history and an already finished stream.
    public func finish() {
        let (subs, next, persisted) = state.withLock { s in
            s.finished = true
            defer { s.subscribers.removeAll() }
            return (Array(s.subscribers.values), s.nextSeq, s.reservedUpTo != nil)
        }
        for c in subs { c.finish() }
        // A clean stop records the exact next number: the next run continues without a gap.
        reserveQueue.sync {}
        if persisted, let reserve = persistence.withLock({ $0 }) { try? reserve(next) }
    }
}
