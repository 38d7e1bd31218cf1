import CThreadAllocations
import EtherTypeFilter
import TapswitchKit
import Testing

/// Takes every frame and counts it, allocating nothing (the test measures the switch path).
private final class CountingSink: FrameSink {
    var frames = 0
    func transmit(_ batch: FrameBatch, to port: PortID, frames list: UnsafeBufferPointer<UInt16>) -> TransmitResult {
        frames &+= list.count
        return TransmitResult(sent: list.count)
    }
}

/// The least a filter can do to drop LLDP: the baseline the debug build compares against.
private final class BareLLDPDrop: SwitchExtension {
    let name = "bare-lldp-drop"
    let extensionClass = ExtensionClass.filtering
    private var reason: DropReason?
    func attached(to sw: VirtualSwitch) { reason = sw.registerDropReason("LLDP (bare)") }
    func ingress(_ context: inout IngressContext) {
        guard let reason else { return }
        for i in context.frames where context.isLive(i) && context.batch.parsed(i).etherType == 0x88CC {
            context.drop(i, reason: reason)
        }
    }
}

@Suite("ethertype-filter allocations")
struct AllocationTests {
    /// Heap allocations on this thread while 100 batches of 64 frames (every other one LLDP, the
    /// rest 0x88b5, all broadcast) go through a switch with `ext` enabled, after 10 warm-up
    /// batches; and the frames forwarded in all 110.
    func measure(_ ext: any SwitchExtension) throws -> (allocations: UInt64, forwarded: Int) {
        let sw = VirtualSwitch(configuration: SwitchConfiguration(maxPorts: 8, batchCapacity: 64))
        try sw.enable(ext)
        var ports: [PortID] = []
        for n in 1...2 as ClosedRange<UInt8> {
            let nic = NICParameters(type: .synthetic, vmName: "vm\(n)", permanentMAC: MACAddress(0x02, 0, 0, 0, 0, n))
            let id = try sw.createPort(name: "p\(n)", type: .synthetic, nic: nic)
            try sw.connectNIC(on: id)
            ports.append(id)
        }
        // Kept in raw memory and refilled into the batch before each run, as a receive would.
        let length = 60
        let template = UnsafeMutableRawPointer.allocate(byteCount: 64 * length, alignment: 8)
        defer { template.deallocate() }
        for i in 0..<64 {
            let f: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 1] + (i % 2 == 0 ? [0x88, 0xCC] : [0x88, 0xB5])
                + [UInt8](repeating: 0, count: length - 14)
            f.withUnsafeBytes { (template + i * length).copyMemory(from: $0.baseAddress!, byteCount: length) }
        }
        let batch = sw.makeBatch(slotSize: 2048 + 2 * FrameBatch.headroom)
        let sink = CountingSink()
        let source = ports[0]
        var allocations: UInt64 = 0
        for run in 0..<110 {
            batch.reset()
            for i in 0..<64 { _ = batch.append(UnsafeRawBufferPointer(start: template + i * length, count: length)) }
            let before = thread_allocations()
            sw.process(batch, from: source, to: sink)
            if run >= 10 { allocations += thread_allocations() - before }
        }
        return (allocations, sink.frames)
    }

    @Test("Steady state: filtering and forwarding a batch allocates nothing of the filter's own")
    func noAllocationPerFrame() throws {
        let ext = try EtherTypeFilter(settings: ExtensionSettings(["blocked": "0x88cc,0x86dd"]))
        let measured = try measure(ext)
        let baseline = try measure(BareLLDPDrop())
        // Positive controls: the counter is hooked in, and the runs did filter and forward.
        let beforeProbe = thread_allocations()
        let probe = [UInt8](repeating: 1, count: 100 + Int(measured.allocations))
        withExtendedLifetime(probe) { #expect(thread_allocations() > beforeProbe, "the counter is not hooked in") }
        #expect(measured.forwarded == 110 * 32 && baseline.forwarded == 110 * 32)
        #expect(ext.counters.first?.value == 110 * 32)
        // The filter itself: nothing beyond what the switch's drop path costs a bare extension.
        #expect(measured.allocations == baseline.allocations, "filter \(measured.allocations), bare extension \(baseline.allocations)")
        #if !DEBUG
        // Optimized (swift test -c release): nothing at all, as alloc-bench requires of the switch.
        #expect(measured.allocations == 0, "\(measured.allocations) allocations in 100 batches of 64 frames")
        #endif
    }
}
