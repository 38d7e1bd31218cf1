import Foundation

/// Runs blocking work (process waits, socket I/O, polling with `nanosleep`) on a thread of its own and
/// awaits its result.
///
/// Async tests run on the cooperative pool, which has one thread per core (2 here). Blocking one in
/// `recv` or `waitpid` while a server in the same process needs the pool to answer would deadlock, and
/// even without a server it stalls every other task.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
