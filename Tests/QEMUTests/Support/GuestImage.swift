import Foundation
import TestSupport
import Locking

/// Kernel and initramfs of the test guest, built from Debian packages by `scripts/build-guest`.
struct GuestImage: Sendable, Equatable {
    /// Path of the guest kernel (`vmlinuz`).
    let kernel: String
    /// Path of the uncompressed initramfs with busybox, iperf3, the virtio-net/802.1Q modules and `/init`.
    let initrd: String

    /// The repository root: `TAPSWITCH_REPO`, else found from this file's location (`Tests/QEMUTests/Support/`).
    static var repositoryRoot: URL { URL(fileURLWithPath: Products.repositoryRoot) }

    private static let located = Locked<GuestImage?>(nil)

    /// Runs `scripts/build-guest` once per process (it builds on first use, then answers from its
    /// cache in about a second) and returns the image paths.
    ///
    /// Throws ``QEMUGuestError/imageBuildFailed(status:output:)`` with the script's output when the
    /// build fails (typically: `scripts/install-deps` not run, or no apt lists).
    static func locate() throws -> GuestImage {
        try located.withLock { cached in
            if let cached { return cached }
            let image = try build()
            cached = image
            return image
        }
    }

    private static func build() throws -> GuestImage {
        let script = repositoryRoot.appendingPathComponent("scripts/build-guest").path
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = ["--print"]
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw QEMUGuestError.imageBuildFailed(status: -1, output: "cannot run \(script): \(error)")
        }
        // Drain both pipes before waiting so a chatty first build cannot block on a full pipe.
        let errData = ReadInBackground(stderr.fileHandleForReading)
        let outData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let out = String(decoding: outData, as: UTF8.self)
        let err = String(decoding: errData.wait(), as: UTF8.self)
        let lines = out.split(separator: "\n").map(String.init)
        guard process.terminationStatus == 0, lines.count >= 2 else {
            throw QEMUGuestError.imageBuildFailed(status: process.terminationStatus, output: err + out)
        }
        let image = GuestImage(kernel: lines[lines.count - 2], initrd: lines[lines.count - 1])
        for path in [image.kernel, image.initrd] where !FileManager.default.fileExists(atPath: path) {
            throw QEMUGuestError.imageBuildFailed(status: 0, output: "build-guest printed '\(path)', which does not exist\n" + err)
        }
        return image
    }
}

/// Reads a file handle to its end on a background thread; `wait()` returns everything read.
private final class ReadInBackground: Sendable {
    private let result = Locked<Data?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        let thread = Thread { [self] in
            let data = handle.readDataToEndOfFile()
            result.withLock { $0 = data }
            done.signal()
        }
        thread.start()
    }

    func wait() -> Data {
        done.wait()
        return result.withLock { $0 ?? Data() }
    }
}
