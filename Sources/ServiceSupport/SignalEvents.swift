import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Delivers SIGTERM, SIGINT, SIGHUP and SIGUSR2 (restart with socket hand-over) as an `AsyncStream`,
/// and ignores SIGPIPE.
///
/// The signals are set to `SIG_IGN` before the Dispatch sources are created (libdispatch on Linux
/// uses signalfd-like delivery and the default action would otherwise kill the process first).
///
/// ## Concurrency model
/// The sources live on one private queue; the storage class is `@unchecked Sendable` because
/// `DispatchSourceSignal` is not Sendable, and the sources are only touched in `init` and `cancel()`.
public final class SignalEvents: @unchecked Sendable {
    public enum Signal: Sendable, Equatable {
        case terminate(Int32)
        case reload
        /// SIGUSR2: restart in place, handing the ports' receive sockets to the new process image.
        case restart
    }

    public let stream: AsyncStream<Signal>
    private let sources: [any DispatchSourceSignal]

    public init() {
        signal(SIGPIPE, SIG_IGN)
        let (stream, continuation) = AsyncStream<Signal>.makeStream()
        self.stream = stream
        let queue = DispatchQueue(label: "tapswitch.signals")
        var made: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGUSR2] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            src.setEventHandler { @Sendable in
                continuation.yield(sig == SIGHUP ? .reload : sig == SIGUSR2 ? .restart : .terminate(sig))
            }
            src.resume()
            made.append(src)
        }
        sources = made
    }

    public func cancel() {
        for s in sources { s.cancel() }
    }
}
