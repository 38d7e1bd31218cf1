import CFuzzDriver
import ControlProtocol
import DaemonConfig
import EmbeddedSwitch
import Foundation
import SwitchCore
import SwitchExtensions

// tapswitch-fuzz TARGET [libFuzzer options] [CORPUS...]: one libFuzzer target per untrusted input.
// Built and run by scripts/fuzz (coverage instrumentation + libFuzzer); an ordinary build only
// says so. Targets:
//   frames   a frame (optionally with a virtio-net header) from one of four ports through the
//            core with every shipped extension enabled
//   control  one control request line (Wire.decodeRequest)
//   config   a config file (ConfigLoader.parse)

/// Frames: byte 0 picks the source port (bits 0-1) and whether a virtio-net header follows
/// (bit 2: 10 bytes: flags, gso type, hdr len, gso size, csum start, csum offset); the rest is the frame.
final class FrameTarget {
    let es = EmbeddedSwitch()
    var ports: [PortID] = []

    init() {
        do {
            for entry in ExtensionRegistry.builtin.entries { try es.sw.enable(ExtensionRegistry.builtin.make(entry.name)) }
            for (i, name) in ["fa", "fb", "fc"].enumerated() {
                ports.append(try es.addPort(name, mac: MACAddress(0x52, 0x54, 0, 0, 0, UInt8(i + 1))))
            }
            ports.append(try es.addPort("fu", mac: MACAddress(0x52, 0x54, 0, 0, 1, 1), type: .external))
        } catch {
            fatalError("frames target set-up: \(error)")
        }
    }

    func run(_ data: UnsafeBufferPointer<UInt8>) {
        guard let control = data.first else { return }
        var rest = data.dropFirst()
        var header: VirtioNetHeader?
        if control & 4 != 0 {
            guard rest.count >= 10 else { return }
            let b = Array(rest.prefix(10))
            header = VirtioNetHeader(flags: b[0], gsoType: b[1], headerLength: UInt16(b[2]) << 8 | UInt16(b[3]),
                                     gsoSize: UInt16(b[4]) << 8 | UInt16(b[5]), checksumStart: UInt16(b[6]) << 8 | UInt16(b[7]),
                                     checksumOffset: UInt16(b[8]) << 8 | UInt16(b[9]))
            rest = rest.dropFirst(10)
        }
        let frame = Array(rest.prefix(65_000))
        es.send(from: ports[Int(control & 3)], frame, vnetHeader: header)
        es.flushPending()
        for p in ports { _ = es.take(p) }
        es.clearRecords()
    }
}

nonisolated(unsafe) var frameTarget: FrameTarget?
let loader = ConfigLoader(availableExtensions: Set(ExtensionRegistry.builtin.entries.map(\.name)), groupExists: { _ in true })

let target = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : ""
let callback: ts_fuzz_callback
switch target {
case "frames":
    frameTarget = FrameTarget()
    callback = { data, size in
        guard let data else { return 0 }
        frameTarget?.run(UnsafeBufferPointer(start: data, count: size))
        return 0
    }
case "control":
    callback = { data, size in
        guard let data else { return 0 }
        _ = try? Wire.decodeRequest(Data(bytes: data, count: size))
        return 0
    }
case "config":
    callback = { data, size in
        guard let data else { return 0 }
        _ = try? loader.parse(String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self), file: "fuzz.toml")
        return 0
    }
default:
    FileHandle.standardError.write(Data("usage: tapswitch-fuzz frames|control|config [libFuzzer options] [CORPUS...] (run it through scripts/fuzz)\n".utf8))
    exit(2)
}
// libFuzzer sees the arguments after the target name.
var argc = CommandLine.argc - 1
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv + 1
argv?.pointee = CommandLine.unsafeArgv[0]
let rc = ts_fuzz_run(&argc, &argv, callback)
if rc == -1 {
    FileHandle.standardError.write(Data("tapswitch-fuzz: built without libFuzzer; use scripts/fuzz \(target)\n".utf8))
    exit(2)
}
exit(rc)
