import ControlProtocol
import Foundation
import Testing
@testable import DaemonConfig

/// Finding 6 of issue 12: a config with tens of thousands of VMs, or a huge broken one.
@Suite("Config file at scale")
struct ConfigScaleTests {
    let loader = ConfigLoader(availableExtensions: nil, groupExists: { _ in true })

    /// `count` VMs with one NIC each; `badMAC` makes every NIC's MAC invalid (one issue per VM).
    static func vms(_ count: Int, badMAC: Bool = false) -> String {
        var text = "[switch]\nname = \"sw0\"\n"
        text.reserveCapacity(count * 80)
        for i in 0..<count {
            let mac = badMAC ? "zz:00:00:00:00:00" : String(format: "52:54:%02x:%02x:%02x:%02x", (i >> 24) & 0xff, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
            text += "[[vm]]\nname = \"v\(i)\"\n[[vm.nic]]\ntap = \"t\(i)\"\nmac = \"\(mac)\"\n"
        }
        return text
    }

    /// Best of `runs` wall-clock times of checking `text`.
    func checkTime(_ text: String, runs: Int = 2) throws -> Duration {
        var best = Duration.seconds(1_000_000)
        for _ in 0..<runs {
            let start = ContinuousClock.now
            _ = try loader.parse(text, file: "big.toml")
            best = min(best, ContinuousClock.now - start)
        }
        return best
    }

    @Test("finding 6: checking 40k VMs is linear in the VM count, not quadratic")
    func finding6_configCheckScalesLinearly() throws {
        let small = Self.vms(5_000), large = Self.vms(40_000)
        let c = try loader.parse(large, file: "big.toml")
        #expect(c.vms.count == 40_000 && c.vms.last?.nics.first?.tap == "t39999")
        // 8 times the VMs: linear costs ~8x, the old quadratic table-array append ~64x (5k VMs
        // 0.33 s, 40k 13.2 s). A complexity check, not a speed target: the bound is loose.
        let ts = try checkTime(small), tl = try checkTime(large)
        let ratio = tl / ts
        #expect(ratio < 30, "40k VMs took \(tl), 5k took \(ts): \(ratio)x for 8x the VMs")
    }

    @Test("finding 6: a file with 40k bad entries reports the first 100 problems and a count of the rest")
    func finding6_errorListCapped() throws {
        do {
            _ = try loader.parse(Self.vms(40_000, badMAC: true), file: "big.toml")
            Issue.record("a file with 40k bad MACs was accepted")
        } catch {
            #expect(error.issues.count == ConfigError.maxIssues)
            #expect(error.omitted == 40_000 - ConfigError.maxIssues)
            let lines = error.description.split(separator: "\n")
            #expect(lines.count == ConfigError.maxIssues + 1)
            #expect(lines.last == "big.toml: 39900 more problems not shown (only the first 100 are listed)")
            #expect(lines.first?.hasPrefix("big.toml:7: vm.nic.mac: 'zz:00:00:00:00:00' is not a MAC address") == true)
        }
    }

    @Test("finding 6: a huge value is never echoed back whole")
    func finding6_hugeValueTruncated() throws {
        let huge = String(repeating: "A", count: 5_000_000)
        for text in ["[switch]\nname = \(huge)\n", "[switch]\nunknown_unicast = \"\(huge)\"\n", "[[vm]]\nname = \"\(huge)\"\n[[vm.nic]]\ntap = \"t0\"\n"] {
            do {
                _ = try loader.parse(text, file: "huge.toml")
                Issue.record("accepted a 5 MB value")
            } catch {
                #expect(!error.issues.isEmpty)
                for issue in error.issues {
                    #expect(issue.message.count <= ConfigIssue.maxMessageLength + 60, "message of \(issue.message.count) characters")
                    #expect(issue.message.contains("characters left out"))
                }
            }
        }
    }
}
