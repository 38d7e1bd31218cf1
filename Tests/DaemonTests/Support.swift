import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A unique temporary directory, removed by ``remove()``.
struct TempDir {
    let path: String

    init(_ tag: String = "tsw") throws {
        let hex = String(UInt32.random(in: 0...0xFFFF), radix: 16)
        path = NSTemporaryDirectory() + "\(tag)-\(getpid())-\(hex)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String) throws -> String {
        let p = file(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Where `swift build` put tapswitchd and tapswitchctl: next to the test bundle.
enum Products {
    static var directory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The bundle may be a directory (…/tapswitchPackageTests.xctest/…); walk up to the build dir.
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("tapswitchctl").path) {
            dir.deleteLastPathComponent()
        }
        return dir.path
    }

    static func path(_ name: String) throws -> String {
        let p = directory + "/" + name
        try #require(FileManager.default.isExecutableFile(atPath: p), "\(name) not built next to the test bundle (run `swift build` first): \(p)")
        return p
    }
}

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// A file that captures a child's stdout or stderr (files, unlike pipes, never block the child).
struct OutputFile {
    let path: String
    let handle: FileHandle

    init(in dir: TempDir, _ name: String) throws {
        path = dir.file("\(name)-\(UInt32.random(in: 0...UInt32.max))")
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }

    var text: String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
}

/// Polls `condition` until it holds or `seconds` pass.
func waitUntil(_ seconds: Double = 10, _ condition: () throws -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try condition()
}

/// Runs a program to completion (with a deadline) and returns its exit status and output.
func run(_ program: String, _ args: [String], environment: [String: String]? = nil, timeout: Double = 30) async throws -> RunResult {
    let dir = try TempDir("tswrun")
    defer { dir.remove() }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    if let environment { p.environment = environment }
    let out = try OutputFile(in: dir, "out")
    let err = try OutputFile(in: dir, "err")
    p.standardOutput = out.handle
    p.standardError = err.handle
    try p.run()
    let finished = try await waitUntil(timeout) { !p.isRunning }
    if !finished {
        p.terminate()
        Issue.record("\(program) \(args.joined(separator: " ")) did not finish within \(timeout)s")
    }
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: out.text, stderr: err.text)
}

/// Runs blocking I/O (control-socket clients) on a thread of its own.
///
/// Test functions run on the cooperative pool (2 threads here); blocking one in `recv` while the
/// server in the same process needs the pool to answer would deadlock.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
