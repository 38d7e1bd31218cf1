import ArgumentParser
import FakeVM

/// `tapswitch-fakevm`: attach to a TAP as QEMU would and send or count frames, for shell scripts.
///
///     tapswitch-fakevm --tap NAME [--vnet-hdr] send --dst MAC --src MAC --count N
///     tapswitch-fakevm --tap NAME [--vnet-hdr] recv --count N --timeout SECONDS
@main
struct FakeVMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tapswitch-fakevm",
        abstract: "Attach to a TAP exactly as QEMU does and send or receive Ethernet frames.",
        subcommands: [Send.self, Receive.self]
    )

    @Option(name: .long, help: "The TAP interface to attach to.")
    var tap: String

    @Flag(name: .customLong("vnet-hdr"), help: "Attach with IFF_VNET_HDR (frames carry a virtio-net header).")
    var vnetHeader = false

    struct Send: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send N frames (EtherType 0x88b5) from --src to --dst.")

        @ParentCommand var attachment: FakeVMCommand

        @Option(help: "Destination MAC (aa:bb:cc:dd:ee:ff).")
        var dst: String

        @Option(help: "Source MAC (aa:bb:cc:dd:ee:ff).")
        var src: String

        @Option(help: "Number of frames to send.")
        var count = 1

        func validate() throws {
            if TestFrames.parseMAC(dst) == nil { throw ValidationError("--dst '\(dst)' is not a MAC address like 02:00:00:00:00:01") }
            if TestFrames.parseMAC(src) == nil { throw ValidationError("--src '\(src)' is not a MAC address like 02:00:00:00:00:01") }
            if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
        }

        func run() throws {
            let vm = try FakeVM(tap: attachment.tap, vnetHeader: attachment.vnetHeader)
            defer { vm.close() }
            let dstMAC = TestFrames.parseMAC(dst) ?? []
            let srcMAC = TestFrames.parseMAC(src) ?? []
            for i in 0..<count {
                let sequence = UInt32(truncatingIfNeeded: i)
                let payload: [UInt8] = [UInt8(sequence >> 24), UInt8((sequence >> 16) & 0xff), UInt8((sequence >> 8) & 0xff), UInt8(sequence & 0xff)]
                try vm.send(TestFrames.ethernet(dst: dstMAC, src: srcMAC, etherType: 0x88b5, payload: payload))
            }
            print("sent \(count)")
        }
    }

    struct Receive: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "recv",
            abstract: "Wait for N frames; print how many arrived; exit 1 if fewer arrived before the timeout."
        )

        @ParentCommand var attachment: FakeVMCommand

        @Option(help: "Number of frames to wait for.")
        var count = 1

        @Option(help: "Seconds to wait in total.")
        var timeout: Double = 5

        func validate() throws {
            if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
            if !(timeout >= 0) { throw ValidationError("--timeout must be a non-negative number of seconds, got \(timeout)") }
        }

        func run() throws {
            let vm = try FakeVM(tap: attachment.tap, vnetHeader: attachment.vnetHeader)
            defer { vm.close() }
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .milliseconds(Int64(timeout * 1000)))
            var received = 0
            while received < count {
                let remaining = clock.now.duration(to: deadline)
                guard remaining > .zero, try vm.receive(timeout: remaining) != nil else { break }
                received += 1
            }
            print("received \(received)")
            if received < count { throw ExitCode(1) }
        }
    }
}
