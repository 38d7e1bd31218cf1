import Locking

/// Control requests answered, by operation and result, with a latency histogram per operation:
/// what `/metrics` exports as `tapswitch_control_requests_total` and
/// `tapswitch_control_request_duration_seconds`.
///
/// ## Concurrency model
/// One `Locked` (pthread mutex) around the tables: the control server's connection threads record, the metrics
/// server reads a copy. Both happen at most once per request or scrape, never per frame.
public final class RequestMetrics: Sendable {
    /// Histogram upper bounds in seconds (a `+Inf` bucket is implied).
    public static let bucketBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public struct Latency: Sendable, Equatable {
        /// Cumulative counts per ``RequestMetrics/bucketBounds`` entry (Prometheus `le` buckets).
        public var buckets: [UInt64] = Array(repeating: 0, count: RequestMetrics.bucketBounds.count)
        public var count: UInt64 = 0
        public var sum: Double = 0
    }

    public struct Key: Hashable, Sendable, Comparable {
        public let op: String
        public let result: String
        public static func < (a: Key, b: Key) -> Bool { (a.op, a.result) < (b.op, b.result) }
    }

    public struct Snapshot: Sendable {
        public var requests: [Key: UInt64] = [:]
        public var latency: [String: Latency] = [:]
    }

    private let state = Locked(Snapshot())

    public init() {}

    /// `result`: `ok` or the error's code (`notFound`, `vetoed`, ...).
    public func record(op: String, result: String, seconds: Double) {
        state.withLock { s in
            s.requests[Key(op: op, result: result), default: 0] += 1
            var l = s.latency[op] ?? Latency()
            for (i, bound) in Self.bucketBounds.enumerated() where seconds <= bound { l.buckets[i] += 1 }
            l.count += 1
            l.sum += seconds
            s.latency[op] = l
        }
    }

    public func snapshot() -> Snapshot { state.withLock { $0 } }
}
