import ControlProtocol
import Foundation
import Locking

/// Numbers lifecycle events, keeps a bounded history and fans them out to subscribers.
///
/// Backends own one and call ``publish(_:portId:portName:nicIndex:vmName:detail:restore:)`` for
/// every lifecycle step; ``subscribe()`` hands out the history and a live stream atomically, so a
/// subscriber neither misses nor duplicates an event.
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
    }

    private let state = Locked(State())
    /// How many past events ``subscribe()`` returns.
    public let historyLimit: Int

    public init(historyLimit: Int = 1000) { self.historyLimit = historyLimit }

    /// Records and delivers one event; returns it with its sequence number and timestamp.
    @discardableResult
    public func publish(_ kind: EventKind, portId: PortID, portName: String, nicIndex: NICIndex? = nil,
                        vmName: String? = nil, detail: String? = nil, restore: Bool = false) -> SwitchEvent {
        state.withLock { s in
            let event = SwitchEvent(seq: s.nextSeq, time: Date(), kind: kind, portId: portId, portName: portName,
                                    nicIndex: nicIndex, vmName: vmName, detail: detail, restore: restore)
            s.nextSeq += 1
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
        let subs = state.withLock { s in
            s.finished = true
            defer { s.subscribers.removeAll() }
            return Array(s.subscribers.values)
        }
        for c in subs { c.finish() }
    }
}
