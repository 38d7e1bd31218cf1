import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A unique temporary directory, removed by ``remove()`` (never automatically).
public struct TempDir: Sendable {
    /// The directory, e.g. `/tmp/tsw-1234-beef`.
    public let path: String

    /// Creates `$TMPDIR/TAG-PID-RANDOM`.
    public init(_ tag: String = "tsw") throws {
        let hex = String(UInt32.random(in: 0...0xFFFF), radix: 16)
        path = NSTemporaryDirectory() + "\(tag)-\(getpid())-\(hex)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// `path/name` (not created).
    public func file(_ name: String) -> String { path + "/" + name }

    /// Writes `text` to `path/name`; returns that path.
    public func write(_ name: String, _ text: String) throws -> String {
        let p = file(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// Removes the directory and everything in it; idempotent.
    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
