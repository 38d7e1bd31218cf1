#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` every `poll` until it is true, or throws ``WaitTimeout`` after `timeout`.
///
/// Use this instead of sleeping: it returns as soon as the condition holds and fails with a clear message
/// when it never does.
public func waitUntil(
    _ what: String = "condition",
    timeout: Duration,
    poll: Duration = .milliseconds(10),
    _ condition: () throws -> Bool
) throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try condition() { return }
        if clock.now >= deadline { throw WaitTimeout(what: what, timeout: timeout) }
        // Never sleep past the deadline; EINTR just ends this nap early.
        let nap = min(poll, clock.now.duration(to: deadline))
        if nap > .zero {
            let (seconds, attoseconds) = nap.components
            var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
            _ = nanosleep(&request, nil)
        }
    }
}

/// ``waitUntil(_:timeout:poll:_:)`` gave up.
public struct WaitTimeout: Error, CustomStringConvertible {
    public var what: String
    public var timeout: Duration
    public var description: String { "\(what) did not become true within \(timeout)" }
}

/// Ignores SIGPIPE for the whole test process, so a write to a closed socket or pipe fails with `EPIPE`
/// instead of killing every running test.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}
