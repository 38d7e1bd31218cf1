#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a `pthread_mutex_t`: the lock of the daemon's control plane and of the tests.
///
/// Why not `Synchronization.Mutex`: on Linux it is built on raw futex calls that ThreadSanitizer
/// cannot see, so every access through it is reported as a race under `--sanitize=thread` (checked
/// with Swift 6.3.1: two threads appending under one `Mutex` give "Swift access race"). A pthread
/// mutex is intercepted by TSan, so the project's sanitizer runs report real races only. Same shape
/// as `Mutex` (`withLock` with an `inout sending` value), so it is a drop-in replacement.
/// Not for the per-frame path, which takes no locks at all.
///
/// ## Concurrency model
/// Any thread may call `withLock`; the body runs with the mutex held and must not call `withLock` on
/// the same instance again (the mutex is not recursive). The value never escapes the lock.
public final class Locked<Value: ~Copyable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let storage: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        storage = .allocate(capacity: 1)
        storage.initialize(to: initialValue)
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock.
    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&storage.pointee)
    }
}
