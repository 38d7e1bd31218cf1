import CMallocCounter
import Scenarios
import SwitchCore

#if canImport(Glibc)
import Glibc
#endif

/// Measures heap allocations per forwarded frame and the forwarding rate of `VirtualSwitch.process`
/// in steady state, for unicast, flood and VLAN-trunk traffic, first on the plain switch, then with
/// every shipped policy extension enabled and every per-port guard on, then also with 100 ACL
/// rules per port and direction, storm control and policing on every port, then with a live
/// capture of every port (both directions, drops) drained after each batch, then with a port mirror
/// (two sources, both directions, copies sent after each batch). Exits 1 if any
/// allocation happens.
///   swift run --package-path Benchmarks -c release alloc-bench [seconds-per-case]
let seconds = CommandLine.arguments.dropFirst().first.flatMap(Double.init) ?? 1.0

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// `value` with `digits` decimals (no Foundation).
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((value * scale).rounded())
    let whole = String(n / Int(scale))
    guard digits > 0 else { return whole }
    let frac = String(abs(n) % Int(scale))
    return whole + "." + String(repeating: "0", count: digits - frac.count) + frac
}

var failed = false
var worst = 0.0
var nsPerFrameBy: [String: Double] = [:]
for mode in ["", "+policies", "+acl100+limits", "+capture", "+mirror"] {
for kind in ForwardingScenario.Kind.allCases {
    let setupStart = malloc_counter_allocations()
    let scenario = ForwardingScenario(kind, policies: mode == "+policies", limits: mode == "+acl100+limits", capture: mode == "+capture",
                                     mirror: mode == "+mirror")
    // Self-check: setting up a switch allocates, so a zero here means the counter is not hooked in.
    guard malloc_counter_allocations() > setupStart else {
        print("alloc-bench: the malloc counter saw no allocation during set-up; counting is not active")
        exit(2)
    }
    for _ in 0..<100 { scenario.run() }  // warm-up: one-time growth happens before measuring

    // Allocation count over a fixed number of batches.
    let batches = 10_000
    let before = malloc_counter_allocations()
    for _ in 0..<batches { scenario.run() }
    let allocations = malloc_counter_allocations() - before
    let received = batches * ForwardingScenario.framesPerBatch
    let perFrame = Double(allocations) / Double(received)
    worst = max(worst, perFrame)
    if allocations != 0 { failed = true }

    // Rate over `seconds`.
    let start = monotonicNanoseconds()
    var runs = 0
    var elapsed: UInt64 = 0
    repeat {
        for _ in 0..<256 { scenario.run() }
        runs += 256
        elapsed = monotonicNanoseconds() - start
    } while Double(elapsed) < seconds * 1e9
    let frames = runs * ForwardingScenario.framesPerBatch
    let nsPerFrame = Double(elapsed) / Double(frames)
    let deliveries = Double(runs * scenario.deliveriesPerRun) / (Double(elapsed) / 1e9)
    let label = kind.rawValue + mode
    nsPerFrameBy[label] = nsPerFrame
    let name = label + String(repeating: " ", count: max(0, 24 - label.count))
    print("\(name) allocations: \(allocations) in \(received) frames, \(fixed(nsPerFrame, 1)) ns/frame, "
          + "\(fixed(Double(frames) / (Double(elapsed) / 1e9) / 1e6, 2)) Mframes/s received, "
          + "\(fixed(deliveries / 1e6, 2)) Mframes/s delivered")
}
}
for kind in ForwardingScenario.Kind.allCases {
    if let plain = nsPerFrameBy[kind.rawValue], let all = nsPerFrameBy[kind.rawValue + "+policies"] {
        print("\(kind.rawValue): every policy on costs \(fixed((all / plain - 1) * 100, 1))% ns/frame")
    }
    if let plain = nsPerFrameBy[kind.rawValue], let all = nsPerFrameBy[kind.rawValue + "+acl100+limits"] {
        print("\(kind.rawValue): policies, 100 ACL rules per port and direction, storm control and policing cost "
              + "\(fixed(all - plain, 1)) ns/frame (\(fixed((all / plain - 1) * 100, 1))%)")
    }
    if let plain = nsPerFrameBy[kind.rawValue], let captured = nsPerFrameBy[kind.rawValue + "+capture"] {
        print("\(kind.rawValue): capturing every frame costs \(fixed((captured / plain - 1) * 100, 1))% ns/frame")
    }
}
print("heap allocations per forwarded frame: \(worst == 0 ? "0" : fixed(worst, 4))")
exit(failed ? 1 : 0)
