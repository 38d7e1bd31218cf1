import Foundation

/// A deadline for stopping: if ``disarm()`` is not called within `seconds`, `expired` runs (on a
/// thread of its own, so a stuck control plane or packet loop cannot hold it up).
///
/// ## Concurrency model
/// One thread waits on a semaphore with a timeout; ``disarm()`` signals it. `expired` runs on
/// that thread at most once.
public final class ShutdownDeadline: Sendable {
    private let disarmed = DispatchSemaphore(value: 0)

    public init(seconds: Double, expired: @escaping @Sendable () -> Void) {
        let t = Thread { [disarmed] in
            if disarmed.wait(timeout: .now() + seconds) == .timedOut { expired() }
        }
        t.name = "tapswitch-shutdown-deadline"
        t.start()
    }

    public func disarm() { disarmed.signal() }
}
