import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a new thread whose fd table is its own copy (`unshare(CLONE_FILES)`) and waits for it.
///
/// Why: a child process spawned by another thread (`posix_spawn`, `fork`) starts with a copy of the
/// process's fd table and holds every fd in it until it execs, close-on-exec or not. A TAP's creating
/// fd caught in such a copy keeps the TAP attached for that moment: its carrier goes up, and QEMU's
/// `TUNSETIFF` fails with `EBUSY`. An fd opened and closed on this thread is never in the shared table.
func onPrivateFileTable<T>(_ body: () throws -> T) throws -> T {
    var result: Result<T, any Error>?
    try withoutActuallyEscaping(body) { body in
        let job = ThreadJob {
            if ts_unshare_files() != 0 {
                result = .failure(SystemError(operation: "unshare(CLONE_FILES)", errno: Glibc.errno))
                return
            }
            result = Result { try body() }
        }
        let context = Unmanaged.passRetained(job).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadJob>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        if rc != 0 {
            Unmanaged<ThreadJob>.fromOpaque(context).release()
            throw SystemError(operation: "pthread_create", errno: rc)
        }
        pthread_join(thread, nil)
    }
    return try result!.get()
}

/// The work of one ``onPrivateFileTable(_:)`` thread (its caller waits, so nothing is shared meanwhile).
private final class ThreadJob {
    private let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    func run() { body() }
}
