import Dispatch
import Foundation
import Locking
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A test trait: the test (or every test of the suite) starts daemons, QEMU guests or traffic at fixed
/// rates, and runs only while no other such test runs in the same process.
///
/// Plain `swift test` runs every test of every suite side by side on a cooperative pool of one thread
/// per core. On a 2-core machine, a dozen daemons with traffic senders and TCG guests running at once
/// starved each other past their 20 s request deadlines; `scripts/test` had already run the daemon
/// suites one at a time for the same reason. With this trait the heavy tests take turns (in the order
/// they ask) while the light tests run beside them, in plain `swift test` as in `scripts/test`. A test
/// waiting for its turn is suspended, not blocking a pool thread.
///
/// The heavy test's body then runs on a thread of its own (``TestThreadExecutor``, a task executor
/// preference), not on the cooperative pool: heavy tests wait for processes, sockets and guests for
/// seconds to minutes, and synchronous ones used to hold one of the pool's two threads all that time,
/// starving the light tests' tasks (a traffic sender on the pool sent ~9 frames/s instead of 200).
/// Child tasks (`async let`, task groups) inherit the thread; unstructured `Task {}` does not.
///
/// ```swift
/// @Suite(.serialized, .heavy) struct MyDaemonTests { ... }
/// ```
///
/// ## Concurrency model
/// One process-wide ``HeavyTestTurn``: a `Locked` flag and a FIFO of continuations. A test case takes
/// the turn before its body runs and gives it back after it, on every path (thrown errors included).
public struct HeavyTestTrait: TestTrait, SuiteTrait, TestScoping {
    /// Recursive: applied to a suite, every test in it (and in nested suites) takes its own turn, so
    /// light tests elsewhere are not held up for a whole suite's length.
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        await HeavyTestTurn.shared.take()
        defer { HeavyTestTurn.shared.giveBack() }
        let thread = TestThreadExecutor(name: "heavy test")
        defer { thread.finish() }
        try await TestThreadExecutor.$current.withValue(thread) {
            try await withTaskExecutorPreference(thread) { try await function() }
        }
    }
}

extension Trait where Self == HeavyTestTrait {
    /// ``HeavyTestTrait``: one heavy test at a time in this process.
    public static var heavy: Self { HeavyTestTrait() }
}

/// The one turn heavy tests take in order (see ``HeavyTestTrait``).
final class HeavyTestTurn: Sendable {
    static let shared = HeavyTestTurn()

    private struct State {
        var taken = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Locked(State())

    /// Returns once the caller holds the turn; suspends (without blocking a thread) while another test holds it.
    func take() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.taken {
                    s.waiting.append(continuation)
                    return false
                }
                s.taken = true
                return true
            }
            if now { continuation.resume() }
        }
    }

    /// Hands the turn to the longest waiting test, or frees it.
    func giveBack() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.taken = false
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// A task executor that runs every job on one thread of its own until ``finish()``.
///
/// ## Concurrency model
/// Any thread enqueues; the executor's thread alone runs jobs, in order. The queue is a `Locked` array;
/// a semaphore counts the jobs (and the finish request) so the thread sleeps while there is nothing to run.
public final class TestThreadExecutor: TaskExecutor, Sendable {
    /// The executor of the running heavy test, if any.
    @TaskLocal public static var current: TestThreadExecutor?

    private struct State {
        var jobs: [UnownedJob] = []
        var finished = false
        var threadID: pthread_t?
    }
    private let state = Locked(State())
    private let wakeups = DispatchSemaphore(value: 0)

    public init(name: String) {
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        state.withLock { $0.jobs.append(job) }
        wakeups.signal()
    }

    /// True on the executor's own thread.
    public var isCurrent: Bool {
        state.withLock { s in s.threadID.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Lets the thread end once the jobs enqueued so far have run.
    public func finish() {
        state.withLock { $0.finished = true }
        wakeups.signal()
    }

    private func run() {
        state.withLock { $0.threadID = pthread_self() }
        let executor = asUnownedTaskExecutor()
        while true {
            wakeups.wait()
            let next = state.withLock { s -> UnownedJob?? in
                if !s.jobs.isEmpty { return .some(s.jobs.removeFirst()) }
                return s.finished ? .none : .some(nil)
            }
            switch next {
            case .none: return
            case .some(nil): continue
            case .some(let job?): job.runSynchronously(on: executor)
            }
        }
    }
}
