import Foundation
import Testing

/// `tapswitchd-custom --check-config`: the custom build offers the extension and checks its
/// settings while loading the config, as the shipped daemon does for its own.
@Suite("tapswitchd-custom --check-config")
struct CheckConfigTests {
    /// The executable SwiftPM built beside this test binary (the bundle may be a directory).
    func daemon() throws -> URL {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("tapswitchd-custom")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir.deleteLastPathComponent()
        }
        throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "tapswitchd-custom above \(exe)"])
    }

    /// Runs `--check-config` on `text`; exit status and stdout + stderr.
    func check(_ text: String) throws -> (status: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ethertype-filter-\(UUID().uuidString).toml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let p = Process()
        p.executableURL = try daemon()
        p.arguments = ["--check-config", "--config", file.path]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test("The example config is valid and enables ethertype-filter")
    func exampleConfig() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/tapswitchd-custom.toml")
        let r = try check(String(contentsOf: path, encoding: .utf8))
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("ethertype-filter"), "\(r.output)")
    }

    @Test("A bad setting of the new extension is an error naming file, line and value (exit 78)")
    func badSetting() throws {
        let r = try check("""
            [extensions]
            enable = ["ethertype-filter"]

            [extensions.ethertype-filter]
            blocked = ["0x88cc", "lldp"]
            """)
        #expect(r.status == 78, "\(r.output)")
        #expect(r.output.contains(":5:") && r.output.contains("'lldp' is not an EtherType"), "\(r.output)")
        let unknown = try check("[extensions]\n[extensions.ethertype-filter]\nblock = \"0x88cc\"\n")
        #expect(unknown.status == 78, "\(unknown.output)")
        #expect(unknown.output.contains(":3:") && unknown.output.contains("unknown setting 'block'"), "\(unknown.output)")
    }
}
