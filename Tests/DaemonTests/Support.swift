import Foundation
import Testing
import TestSupport

/// The shared temp directory type, for this target's files that do not import TestSupport.
typealias TempDir = TestSupport.TempDir

/// ``TestSupport/offPool(_:)``, for this target's files that do not import TestSupport.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await TestSupport.offPool(body)
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

/// Runs a program to completion (with a deadline) off the cooperative pool; its exit status and output.
/// `environment`, when given, replaces the inherited one.
func run(_ program: String, _ args: [String], environment: [String: String]? = nil, timeout: Double = 30) async throws
    -> (status: Int32, stdout: String, stderr: String) {
    try await offPool { try Shell.run([program] + args, environment: environment, timeout: .seconds(timeout)) }
}
