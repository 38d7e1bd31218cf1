import Benchmark
import Scenarios

/// Steady-state forwarding through `VirtualSwitch.process`. One iteration = one batch of 64
/// received frames. The switch must add no heap allocation: each case's mallocCountTotal must equal
/// the empty baseline's (the benchmark harness allocates a few times per measured iteration itself).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )
    // The harness's own per-iteration allocations: subtract these from the cases below.
    Benchmark("baseline: empty iteration") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(benchmark) }
    }
    for kind in ForwardingScenario.Kind.allCases {
        Benchmark("forward 64-frame batch: \(kind.rawValue)") { (benchmark: Benchmark, scenario: ForwardingScenario) in
            for _ in benchmark.scaledIterations {
                scenario.run()
            }
            blackHole(scenario.sink.frames)
        } setup: {
            let s = ForwardingScenario(kind)
            s.run()  // warm up: first-use growth happens here, not in the measurement
            return s
        }
    }
}
