import EmbeddedSwitch
import SwitchCore
import Testing

/// A shared, ordered record of what every extension saw ("name:KIND"), to check stack order.
final class CallLog {
    var entries: [String] = []
}

/// An extension that records every control request and completion, can veto chosen requests, and
/// runs per-batch actions supplied by the test.
final class RecordingExtension: SwitchExtension {
    struct Seen: Equatable, CustomStringConvertible {
        let kind: OIDRequest.Kind
        let port: PortID
        let isRestore: Bool
        var description: String { "\(kind.rawValue)(\(port)\(isRestore ? ",restore" : ""))" }
    }

    let name: String
    let extensionClass: ExtensionClass
    let log: CallLog?

    private(set) var requests: [OIDRequest] = []
    private(set) var completions: [(request: OIDRequest, outcome: ControlOutcome)] = []
    /// Vetoes (reason) per request kind.
    var vetoes: [OIDRequest.Kind: String] = [:]
    /// Called for each request after it is recorded (re-entrancy tests).
    var onControl: ((OIDRequest, VirtualSwitch) -> Void)?
    var onAttached: ((VirtualSwitch) -> Void)?
    var onIngress: ((inout IngressContext) -> Void)?
    var onEgress: ((inout EgressContext) -> Void)?
    private(set) var attachCount = 0
    private(set) var detachCount = 0
    /// Bytes of every frame live at this extension on ingress / egress.
    private(set) var ingressFrames: [[UInt8]] = []
    private(set) var egressFrames: [[UInt8]] = []

    init(_ name: String, _ extensionClass: ExtensionClass, log: CallLog? = nil) {
        self.name = name
        self.extensionClass = extensionClass
        self.log = log
    }

    var seen: [Seen] { requests.map { Seen(kind: $0.kind, port: $0.port.id, isRestore: $0.isRestore) } }
    var kinds: [OIDRequest.Kind] { requests.map(\.kind) }
    var completedKinds: [OIDRequest.Kind] { completions.map(\.request.kind) }

    func attached(to sw: VirtualSwitch) {
        attachCount += 1
        onAttached?(sw)
    }

    func detached(from sw: VirtualSwitch) { detachCount += 1 }

    func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        requests.append(request)
        log?.entries.append("\(name):\(request.kind.rawValue)")
        onControl?(request, sw)
        if let reason = vetoes[request.kind] { return .veto(reason: reason) }
        return .accept
    }

    func controlCompleted(_ request: OIDRequest, outcome: ControlOutcome, switch sw: VirtualSwitch) {
        completions.append((request, outcome))
    }

    func ingress(_ context: inout IngressContext) {
        for i in context.frames where context.isLive(i) { ingressFrames.append(context.batch.copyBytes(i)) }
        onIngress?(&context)
    }

    func egress(_ context: inout EgressContext) {
        for i in context.frames where context.isLive(i) { egressFrames.append(context.batch.copyBytes(i)) }
        onEgress?(&context)
    }
}

/// Test MAC addresses 02:00:00:00:00:nn (locally administered unicast).
func mac(_ n: UInt8) -> MACAddress { MACAddress(0x02, 0, 0, 0, 0, n) }

/// A frame from `src` to `dst` with a distinguishing payload byte.
func frame(_ dst: MACAddress, _ src: MACAddress, tag: UInt8 = 0xAB, vlan: UInt16? = nil) -> [UInt8] {
    TestFrame.ethernet(dst: dst, src: src, vlan: vlan, payload: Array(repeating: tag, count: 46))
}

extension EmbeddedSwitch {
    /// Lifecycle events as "kind:port" strings (compact to compare).
    var eventKinds: [LifecycleEvent.Kind] { events.map(\.kind) }

    /// Ingress/egress drop count at `port` for `reason`, whoever reported it.
    func dropCount(_ port: PortID, _ direction: Direction, _ reason: DropReason) -> UInt64 {
        (sw.counters(of: port)?.drops ?? [:]).filter { $0.key.direction == direction && $0.key.reason == sw.text(of: reason) }.values.reduce(0, +)
    }

    /// Makes `port`'s source MAC known to the switch (a broadcast from it), then forgets what was delivered.
    func learn(_ port: PortID, _ address: MACAddress) {
        send(from: port, frame(.broadcast, address, tag: 0x01))
        for p in sw.ports { _ = take(p.id) }
    }
}

/// Deterministic random numbers (SplitMix64) so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension DropReport {
    /// "port direction reason by reporter" (reporter "switch" when the switch itself dropped).
    var summary: String { "\(port) \(direction) \(reason) by \(reporter)" }
}
