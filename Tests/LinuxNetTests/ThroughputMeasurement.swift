import FakeVM
import Foundation
import LinuxNet
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

extension Privileged {
    /// Rough figures for the report, not assertions: run with `TAPSWITCH_MEASURE=1`.
    @Suite("Batch I/O throughput (printed, TAPSWITCH_MEASURE=1)",
           .enabled(if: ProcessInfo.processInfo.environment["TAPSWITCH_MEASURE"] == "1"))
    struct ThroughputMeasurement {
        @Test("64-byte frames: FakeVM write -> recvmmsg, and sendmmsg(bypass) -> FakeVM read, batches of 64")
        func measure() throws {
            try Privilege.requireNetAdmin()
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("perf", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let port = try Receiver(link, options: .init(vnetHeader: true, auxData: true, ignoreOutgoing: true, qdiscBypass: true), slots: 64)
            let frame = TestFrames.ethernet(dst: TestFrames.mac(2), src: TestFrames.mac(1), etherType: 0x88b5, payload: [])
            let rounds = 500, batch = 64
            let clock = ContinuousClock()

            // With LD_PRELOAD of a counting malloc (exports ts_malloc_count), count allocations in the hot calls only.
            let counter = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "ts_malloc_count")?.assumingMemoryBound(to: UInt.self)
            var hotMallocs: UInt = 0
            var received = 0
            let rxTime = try clock.measure {
                for _ in 0..<rounds {
                    for _ in 0..<batch { try vm.send(frame) }
                    var got = 0
                    while got < batch {
                        let before = counter?.pointee ?? 0
                        let result = port.vector.receive(from: port.fd, max: batch)
                        hotMallocs += (counter?.pointee ?? 0) - before
                        switch result {
                        case .done(let n): got += n
                        case .wouldBlock: continue
                        case .failed(let code): throw SystemError(operation: "recvmmsg", errno: code)
                        }
                    }
                    received += got
                }
            }

            let header = [UInt8](repeating: 0, count: 10)
            let send = SendVector(capacity: batch)
            var sent = 0
            var sendOnly = Duration.zero
            let txTime = try header.withUnsafeBytes { h in
                try frame.withUnsafeBytes { f in
                    try clock.measure {
                        for _ in 0..<rounds {
                            send.reset()
                            let start = clock.now
                            let before = counter?.pointee ?? 0
                            for _ in 0..<batch { _ = send.append(header: h.baseAddress, headerLength: 10, frame: f.baseAddress!, frameLength: f.count) }
                            if case .sent(let n) = send.send(to: port.fd) { sent += n }
                            hotMallocs += (counter?.pointee ?? 0) - before
                            sendOnly += clock.now - start
                            try vm.drain()
                        }
                    }
                }
            }
            func perFrame(_ d: Duration, _ n: Int) -> String {
                let ns = Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9
                return String(format: "%.2f µs/frame", ns / Double(max(n, 1)) / 1000)
            }
            print("MEASURE rx: \(received) frames, FakeVM write + recvmmsg: \(perFrame(rxTime, received))")
            print("MEASURE tx: \(sent) frames, append + sendmmsg: \(perFrame(sendOnly, sent)); with FakeVM read: \(perFrame(txTime, sent))")
            if counter != nil { print("MEASURE malloc calls inside receive/append/send over \(rounds) batches each way: \(hotMallocs) (process total so far: \(counter?.pointee ?? 0))") }
            #expect(received == rounds * batch)
            #expect(sent == rounds * batch)
        }
    }
}
