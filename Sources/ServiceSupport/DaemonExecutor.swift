import Foundation
import Locking

/// Threads of the daemon's own on which its async control work runs (as a task executor
/// preference), so the control plane never needs a free thread of Swift's cooperative pool.
///
/// Why: the control server answers from plain threads that wait for an async answer. If that
/// answer had to run on the cooperative pool, a pool kept busy elsewhere (a test process running
/// suites in parallel on a 2-core machine, or anything blocking a pool thread) would stall every
/// control request. Tasks started with `Task(executorPreference: DaemonExecutor.shared)` or inside
/// `withTaskExecutorPreference(DaemonExecutor.shared)` run here, and so do the default actors
/// (`ControlService`, the backend) they call into.
///
/// ## Concurrency model
/// A fixed set of threads take jobs from one FIFO (a `Mutex`-guarded array, a counting semaphore
/// for wake-ups). Jobs must not block for long: device set-up (netlink, TAP ioctls) is fine, waiting
/// for another job of this executor is not. The threads live as long as the process.
public final class DaemonExecutor: TaskExecutor, Sendable {
    /// The process-wide instance (two threads: a request may do blocking device set-up while a
    /// query or an event stream still gets answered).
    public static let shared = DaemonExecutor(threads: 2, name: "tapswitch-control")

    private let queue = Locked<(jobs: [UnownedJob], head: Int)>(([], 0))
    private let available = DispatchSemaphore(value: 0)

    public init(threads: Int, name: String) {
        precondition(threads > 0)
        for i in 0..<threads {
            let t = Thread { [self] in work() }
            t.name = "\(name)-\(i)"
            t.start()
        }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.withLock { $0.jobs.append(job) }
        available.signal()
    }

    private func work() {
        while true {
            available.wait()
            let job = queue.withLock { q -> UnownedJob in
                let j = q.jobs[q.head]
                q.head += 1
                // Compact now and then instead of removing from the front each time.
                if q.head > 64 && q.head * 2 > q.jobs.count {
                    q.jobs.removeFirst(q.head)
                    q.head = 0
                }
                return j
            }
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs async work from a plain thread (never a cooperative-pool thread) and waits for it. The
/// work runs on ``DaemonExecutor/shared``.
public func blockingAwait<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let done = DispatchSemaphore(value: 0)
    let box = Locked<T?>(nil)
    Task(executorPreference: DaemonExecutor.shared) {
        let v = await body()
        box.withLock { $0 = v }
        done.signal()
    }
    done.wait()
    return box.withLock { $0! }
}
