import ControlProtocol
import Foundation
import Testing
import TestSupport

/// NIC save/restore across a daemon restart (issue 14, the extension contract): an extension's
/// per-NIC state is saved when the daemon stops, kept in the state file and handed back when the
/// next run re-adopts the port. `tapswitchd-fake` offers the test extension `nic-memo`.
@Suite("NIC save/restore across a daemon restart", .serialized, .heavy)
struct NICSaveRestoreTests {
    static let config = """
        [switch]
        name = "tsw-nicsave"
        [extensions]
        enable = ["nic-memo"]
        """

    func creates(_ d: DaemonUnderTest, _ port: String) async throws -> UInt64? {
        let list = try await d.json([ExtensionInfo].self, "extensions")
        return list.first { $0.name == "nic-memo" }?.counters.first { $0.name == "creates:\(port)" }?.value
    }

    @Test("An extension's saved NIC state is restored after a restart; a crash (no save) starts it afresh")
    func restoredAfterRestart() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let d = try DaemonUnderTest(config: .text(Self.config), binary: "tapswitchd-fake", cleanup: cleanup)
        try await d.start()
        let start = try await d.ctl("vm", "start", "web1", "--nic", "web1-0", "--mac", "52:54:00:12:34:56")
        #expect(start.status == 0, "\(start.stderr)")
        #expect(try await creates(d, "web1-0") == 1)

        // Restart (SIGTERM): the state is saved, then handed back on re-adoption and consumed.
        #expect(try await d.stop() == 0)
        let state = try String(contentsOfFile: d.stateDir + "/state.json", encoding: .utf8)
        #expect(state.contains("\"nicStates\"") && state.contains("\"nic-memo\""), "\(state)")
        try await d.start()
        #expect(try await creates(d, "web1-0") == 2, "re-adoption's NIC_CREATE plus the restored count\n\(d.log)")
        let after = try String(contentsOfFile: d.stateDir + "/state.json", encoding: .utf8)
        #expect(!after.contains("\"nicStates\""), "the blob is handed back once, not kept")

        // Control: a crash saves nothing, so the extension starts from the re-adoption alone.
        try await d.sigkill()
        try await d.start()
        #expect(try await creates(d, "web1-0") == 1)
    }
}
