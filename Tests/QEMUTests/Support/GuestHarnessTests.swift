import Foundation
import TestSupport
import Testing
import TestSupport

/// Tests of the guest harness itself (QEMUGuest, GuestSpec, GuestResult, scripts/build-guest),
/// on a throwaway Linux bridge, without tapswitch.
@Suite("Guest harness")
struct GuestHarnessUnitTests {
    @Test func kernelCommandLineCarriesTheInitContract() throws {
        var spec = GuestSpec(name: "a", tap: "tg0000a", mac: "52:54:00:aa:bb:cc", ip: "10.99.10.1/24",
                             role: .ping(peers: ["10.99.10.2", "10.99.10.3"], count: 4))
        spec.vlan = 10
        spec.peerWait = 7
        try spec.validate()
        let words = spec.kernelCommandLine.split(separator: " ").map(String.init)
        #expect(words.starts(with: ["console=ttyS0"]))
        for word in ["tsw.role=ping", "tsw.ip=10.99.10.1/24", "tsw.vlan=10", "tsw.peer=10.99.10.2,10.99.10.3",
                     "tsw.count=4", "tsw.wait=7"] {
            #expect(words.contains(word), "missing \(word) in \(words)")
        }
        let args = QEMUGuest.qemuArguments(spec: spec, image: GuestImage(kernel: "/k", initrd: "/i"), serialLog: "/s")
        #expect(args.contains("tap,id=n0,ifname=tg0000a,script=no,downscript=no"))
        #expect(args.contains("virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc,romfile="))
        #expect(args.contains("file:/s"))
    }

    @Test func vlanSubInterfacesAndLingerReachTheCommandLine() throws {
        var spec = GuestSpec(name: "t", tap: "tg0000a", ip: "", role: .ping(peers: ["10.99.10.2", "10.99.20.2"]))
        spec.vlans = [VLANInterface(vlan: 10, ip: "10.99.10.1/24"), VLANInterface(vlan: 20, ip: "10.99.20.1/24")]
        spec.linger = true
        try spec.validate()
        let words = spec.kernelCommandLine.split(separator: " ").map(String.init)
        #expect(words.contains("tsw.vlans=10:10.99.10.1/24,20:10.99.20.1/24") && words.contains("tsw.linger=1"))
        #expect(!words.contains { $0.hasPrefix("tsw.ip=") }, "no address on eth0: \(words)")
        var twice = spec
        twice.vlans.append(VLANInterface(vlan: 10, ip: "10.99.30.1/24"))
        var range = spec
        range.vlans = [VLANInterface(vlan: 0, ip: "10.99.10.1/24")]
        var noPrefix = spec
        noPrefix.vlans = [VLANInterface(vlan: 10, ip: "10.99.10.1")]
        var nothing = spec
        nothing.vlans = []
        for (bad, field) in [(twice, "vlans"), (range, "vlans"), (noPrefix, "vlans"), (nothing, "ip")] {
            #expect {
                try bad.validate()
            } throws: { error in
                guard case QEMUGuestError.invalidSpec(_, let f, _, _) = error else { return false }
                return f == field
            }
        }
    }

    @Test func invalidSpecsAreRejectedWithTheField() {
        let good = GuestSpec(name: "g", tap: "tg0000a", ip: "10.99.0.1/24", role: .idle)
        var longTap = good
        longTap.tap = "tg0123456789abcd"
        var badMAC = good
        badMAC.mac = "52:54:00:zz:00:01"
        var multicast = good
        multicast.mac = "01:00:5e:00:00:01"
        var noPrefix = good
        noPrefix.ip = "10.99.0.1"
        var badVLAN = good
        badVLAN.vlan = 4095
        for (spec, field) in [(longTap, "tap"), (badMAC, "mac"), (multicast, "mac"), (noPrefix, "ip"), (badVLAN, "vlan")] {
            #expect {
                try spec.validate()
            } throws: { error in
                guard case QEMUGuestError.invalidSpec(_, let f, _, _) = error else { return false }
                return f == field
            }
        }
        #expect(throws: Never.self) { try good.validate() }
    }

    @Test func resultLinesParseEvenAfterEscapeCodes() throws {
        let tcp = try #require(GuestResult(line: "\u{1b}[2JTSW-RESULT tcp ok 972000000"))
        #expect(tcp.kind == "tcp" && tcp.ok && tcp.bitsPerSecond == 972_000_000)
        let ping = try #require(GuestResult(line: "TSW-RESULT ping fail sent=5 received=3 peer=10.99.0.2"))
        #expect(!ping.ok && ping.value("received") == "3" && ping.value("peer") == "10.99.0.2")
        #expect(GuestResult(line: "TSW-READY if=eth0") == nil)
        #expect(GuestResult(line: "TSW-RESULT tcp maybe") == nil)
    }
}

/// Boots real guests: needs root, /dev/net/tun and qemu-system-x86_64. Skipped without them,
/// except under CI=true where missing privileges fail the run.
@Suite("Guest harness on a Linux bridge", .serialized, .heavy,
       .enabled(if: HostBridge.privileged || HostBridge.isCI, "needs root, /dev/net/tun and qemu-system-x86_64"))
struct GuestHarnessBridgeTests {
    @Test func pingIdleKillAndTCP() throws {
        try #require(HostBridge.privileged, "needs root, /dev/net/tun and qemu-system-x86_64")
        let image = try GuestImage.locate()
        let segment = try HostBridge(taps: 2)
        defer { segment.remove() }

        // An idle guest answers pings; kill() ends QEMU at once; a ping guest powers off by itself.
        let idle = try QEMUGuest(GuestSpec(name: "idle", tap: segment.taps[0], ip: "10.99.0.1/24", role: .idle), image: image)
        try idle.waitForReady()
        let pinger = try QEMUGuest(GuestSpec(name: "ping", tap: segment.taps[1], ip: "10.99.0.2/24",
                                             role: .ping(peers: ["10.99.0.1"], count: 3)), image: image)
        let ping = try pinger.waitForResult()
        #expect(ping.ok && ping.value("received") == "3", "\(ping.line)\n\(pinger.serialLog)")
        #expect(try pinger.waitForExit(timeout: .seconds(20)) == 0)
        #expect(idle.isRunning)
        idle.kill()
        #expect(try idle.waitForExit(timeout: .seconds(10)) == SIGKILL)

        // TCP: the client (sender) keeps default offloads and sends TSO superframes into its TAP;
        // the server's NIC has every offload off, so the host must segment for it.
        var serverSpec = GuestSpec(name: "srv", tap: segment.taps[0], ip: "10.99.0.1/24", role: .iperfServer())
        serverSpec.offloads = false
        let server = try QEMUGuest(serverSpec, image: image)
        let client = try QEMUGuest(GuestSpec(name: "cli", tap: segment.taps[1], ip: "10.99.0.2/24",
                                             role: .iperfClient(server: "10.99.0.1", seconds: 2)), image: image)
        let tcp = try client.waitForResult()
        #expect(tcp.ok && (tcp.bitsPerSecond ?? 0) > 1_000_000, "\(tcp.line)\n\(client.serialLog)")
        #expect(try server.waitForResult().ok, "\(server.serialLog)")
        try client.waitForExit(timeout: .seconds(20))
        try server.waitForExit(timeout: .seconds(20))
    }

    @Test func vlanSubInterfacesReachTheSameVLANOnly() throws {
        try #require(HostBridge.privileged, "needs root, /dev/net/tun and qemu-system-x86_64")
        let image = try GuestImage.locate()
        let segment = try HostBridge(taps: 3)
        defer { segment.remove() }

        var target = GuestSpec(name: "v10", tap: segment.taps[0], ip: "10.99.10.1/24", role: .idle)
        target.vlan = 10
        let idle = try QEMUGuest(target, image: image)
        #expect(try idle.waitForReady().contains("if=eth0.10"))

        var same = GuestSpec(name: "same", tap: segment.taps[1], ip: "10.99.10.2/24", role: .ping(peers: ["10.99.10.1"], count: 3))
        same.vlan = 10
        var other = GuestSpec(name: "other", tap: segment.taps[2], ip: "10.99.10.3/24", role: .noPing(peers: ["10.99.10.1"]))
        other.vlan = 20
        other.peerWait = 4
        let sameGuest = try QEMUGuest(same, image: image)
        let otherGuest = try QEMUGuest(other, image: image)
        let reached = try sameGuest.waitForResult()
        #expect(reached.ok, "\(reached.line)\n\(sameGuest.serialLog)")
        let isolated = try otherGuest.waitForResult()
        #expect(isolated.kind == "noping" && isolated.ok, "\(isolated.line)\n\(otherGuest.serialLog)")
    }

    @Test func exitBeforeMarkerFailsFastWithTheLog() throws {
        try #require(HostBridge.privileged, "needs root, /dev/net/tun and qemu-system-x86_64")
        let segment = try HostBridge(taps: 1)
        defer { segment.remove() }
        // An unknown role makes /init print TSW-ERROR and power off: waitFor must not sit out its timeout.
        var spec = GuestSpec(name: "bad", tap: segment.taps[0], ip: "10.99.0.1/24", role: .idle)
        spec.extraKernelArguments = ["tsw.role=bogus"]
        let guest = try QEMUGuest(spec)
        let start = ContinuousClock.now
        #expect {
            try guest.waitFor(marker: "TSW-RESULT", timeout: .seconds(120))
        } throws: { error in
            guard case QEMUGuestError.exitedEarly(_, _, _, let log, _) = error else { return false }
            return log.contains("TSW-ERROR unknown tsw.role 'bogus'")
        }
        #expect(ContinuousClock.now - start < .seconds(60))
    }
}

/// A throwaway Linux bridge (STP off, no IP, IPv6 off) with persistent TAPs, named `tg<4 hex>…`.
/// Self-contained on purpose (uses `ip`), so the harness tests do not depend on the project's code.
final class HostBridge {
    static let isCI = ProcessInfo.processInfo.environment["CI"] == "true"
    static let privileged: Bool = geteuid() == 0 && access("/dev/net/tun", R_OK | W_OK) == 0
        && (try? run(["qemu-system-x86_64", "--version"])) != nil

    let bridge: String
    let taps: [String]

    init(taps count: Int) throws {
        let id = String(format: "%04x", UInt16.random(in: 0...UInt16.max))
        bridge = "tg\(id)br"
        taps = (0..<count).map { "tg\(id)t\($0)" }
        do {
            try Self.run(["ip", "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
            Self.disableIPv6(bridge)
            for tap in taps {
                try Self.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
                Self.disableIPv6(tap)
                try Self.run(["ip", "link", "set", tap, "master", bridge, "up"])
            }
            try Self.run(["ip", "link", "set", bridge, "up"])
        } catch {
            remove()
            throw error
        }
    }

    func remove() {
        for name in taps + [bridge] { _ = try? Self.run(["ip", "link", "del", name]) }
    }

    private static func disableIPv6(_ name: String) {
        // Keeps the host from sending router solicitations into the guests' segment.
        guard let sysctl = FileHandle(forWritingAtPath: "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6") else { return }
        sysctl.write(Data("1".utf8))
        try? sysctl.close()
    }

    @discardableResult
    static func run(_ argv: [String]) throws -> String {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw HostCommandError(command: argv.joined(separator: " "), status: process.terminationStatus, output: output)
        }
        return output
    }
}

struct HostCommandError: Error, CustomStringConvertible {
    let command: String
    let status: Int32
    let output: String
    var description: String { "'\(command)' failed (exit \(status)): \(output)" }
}
