import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where `swift build` put the project's executables, and where the repository is.
public enum Products {
    /// `TAPSWITCH_BIN_DIR`, else the first directory above the running test binary that holds executable
    /// `tapswitchd` and `tapswitchctl` (SwiftPM puts test bundles and executables side by side in
    /// `.build/<config>`; the bundle may be a directory, hence the walk up).
    public static func directory() throws -> String {
        if let explicit = ProcessInfo.processInfo.environment["TAPSWITCH_BIN_DIR"] {
            guard holdsBoth(explicit) else {
                throw TestHelperError("TAPSWITCH_BIN_DIR=\(explicit) holds no executable tapswitchd and tapswitchctl")
            }
            return explicit
        }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
        while dir.path != "/" {
            if holdsBoth(dir.path) { return dir.path }
            dir.deleteLastPathComponent()
        }
        throw TestHelperError("""
            tapswitchd/tapswitchctl not found above \(exe); build them first (swift build, or \
            swift build --product tapswitchd && swift build --product tapswitchctl) or set TAPSWITCH_BIN_DIR
            """)
    }

    /// The built executable `name` (e.g. `tapswitchctl`).
    public static func path(_ name: String) throws -> String {
        let path = try directory() + "/" + name
        guard access(path, X_OK) == 0 else { throw TestHelperError("\(name) is not built next to the test bundle: \(path)") }
        return path
    }

    /// The repository root: `TAPSWITCH_REPO`, else found from this file's location (`Tests/TestSupport/`).
    public static let repositoryRoot: String = {
        if let explicit = ProcessInfo.processInfo.environment["TAPSWITCH_REPO"] { return explicit }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    private static func holdsBoth(_ dir: String) -> Bool {
        access(dir + "/tapswitchd", X_OK) == 0 && access(dir + "/tapswitchctl", X_OK) == 0
    }
}

/// A failure of a test helper, with its context (daemon log, events, device) in the message.
public struct TestHelperError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
