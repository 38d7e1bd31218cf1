import ControlProtocol
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// BGP EVPN through FRR (bgpd + zebra from Debian's `frr`, started by hand in each host namespace):
/// host 1 and host 3 run tapswitch with an EVPN segment (VXLAN learning off), host 2 is the reference
/// set-up operators run: a Linux bridge with a VXLAN device and FRR. The BGP daemons peer over the
/// underlay (iBGP full mesh); remote MACs reach each VXLAN FDB only from routes.
@Suite(.serialized, .heavy, .enabled(if: Privilege.shouldRun && FRR.available, "needs root and FRR (/usr/lib/frr/zebra, bgpd)"))
struct EVPNTests {
    @Test("tapswitch and a Linux bridge + FRR host share VNI 100 through EVPN; a stopped VM is withdrawn; a MAC moving host 1 -> host 3 is reached from host 2 within 1 s")
    func interopAndMigration() async throws {
        let cleanup = Cleanup()
        defer { cleanup.run() }
        let n = UniqueNames()
        func netns(_ role: String) throws -> Netns {
            let ns = try Netns(name: n.name(role))
            cleanup.add("netns \(ns.name)") { ns.delete() }
            return ns
        }
        let underlay = try netns("ul")
        try underlay.check(["ip", "link", "add", "br0", "type", "bridge"])
        try underlay.check(["ip", "link", "set", "br0", "up"])
        var hosts: [Netns] = []
        for i in 1...3 {
            let ns = try netns("h\(i)")
            let a = n.name("h\(i)u"), b = n.name("h\(i)b")
            try Shell.check(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            cleanup.deleteLink(a)
            try Shell.check(["ip", "link", "set", a, "netns", ns.name, "mtu", "1550"])
            try Shell.check(["ip", "link", "set", b, "netns", underlay.name, "mtu", "1550"])
            try underlay.check(["ip", "link", "set", b, "master", "br0", "up"])
            try ns.check(["ip", "addr", "add", "192.0.2.\(i)/24", "dev", a])
            try ns.check(["ip", "link", "set", a, "up"])
            hosts.append(ns)
        }
        let h1 = hosts[0], h2 = hosts[1], h3 = hosts[2]

        // Host 2: the reference set-up, a Linux bridge with the VXLAN device (learning off) and a VM.
        let v2 = try netns("v2")
        let v2mac = "02:5e:00:02:00:02", v2ip = "10.78.0.2"
        try h2.check(["ip", "link", "add", "br100", "type", "bridge"])
        try h2.check(["ip", "link", "set", "br100", "addrgenmode", "none"])
        try h2.check(["ip", "link", "add", "vx100", "type", "vxlan", "id", "100", "local", "192.0.2.2", "dstport", "4789", "nolearning",
                      "dev", n.name("h2u")])
        try h2.check(["ip", "link", "set", "vx100", "master", "br100", "addrgenmode", "none"])
        try h2.check(["ip", "link", "set", "vx100", "up"])
        try h2.check(["ip", "link", "set", "br100", "up"])
        let v2a = n.name("v2a"), v2b = n.name("v2b")
        try Shell.check(["ip", "link", "add", v2a, "type", "veth", "peer", "name", v2b])
        cleanup.deleteLink(v2a)
        try Shell.check(["ip", "link", "set", v2a, "netns", v2.name])
        try Shell.check(["ip", "link", "set", v2b, "netns", h2.name])
        try h2.check(["ip", "link", "set", v2b, "master", "br100", "up"])
        try v2.check(["ip", "link", "set", v2a, "address", v2mac, "up"])
        try v2.check(["ip", "addr", "add", v2ip + "/24", "dev", v2a])

        // Hosts 1 and 3: tapswitch with an EVPN segment; host 1 has a VM (a1) and the VM that will move (m).
        let a1 = try netns("a1"), m1 = try netns("m1"), m3 = try netns("m3")
        let a1port = n.name("pa1"), mport = n.name("pm")
        let a1mac = "02:5e:00:01:00:01", a1ip = "10.78.0.1", mmac = "02:5e:00:09:00:09", mip = "10.78.0.9"
        func tapswitchConfig(_ i: Int, vms: String) -> String {
            """
            [[segment]]
            name = "vx100"
            vlan = 10
            vni = 100
            local = "192.0.2.\(i)"
            underlay = "\(n.name("h\(i)u"))"
            evpn = true
            \(vms)
            """
        }
        let d1 = try DaemonUnderTest(config: .text(tapswitchConfig(1, vms: """

            [[internal]]
            name = "\(a1port)"
            mac = "\(a1mac)"
            netns = "\(a1.name)"
            vlan = 10

            [[internal]]
            name = "\(mport)"
            mac = "\(mmac)"
            netns = "\(m1.name)"
            vlan = 10
            """)), netns: h1.name, cleanup: cleanup)
        let d3 = try DaemonUnderTest(config: .text(tapswitchConfig(3, vms: "")), netns: h3.name, cleanup: cleanup)
        try await d1.start()
        try await d3.start()
        for (ns, dev, ip) in [(a1, a1port, a1ip), (m1, mport, mip)] {
            try ns.check(["ip", "addr", "add", ip + "/24", "dev", dev])
            try ns.check(["ip", "link", "set", dev, "up"])
        }

        // FRR in every host: zebra and bgpd, iBGP full mesh, advertise-all-vni.
        var frr: [FRR] = []
        for i in 1...3 {
            let f = try FRR(host: hosts[i - 1], index: i, peers: (1...3).filter { $0 != i }.map { "192.0.2.\($0)" }, cleanup: cleanup)
            frr.append(f)
        }

        func ping(_ ns: Netns, _ ip: String, count: Int = 2) throws -> Bool {
            try ns.run(["ping", "-c", "\(count)", "-i", "0.2", "-W", "1", ip], timeout: .seconds(15)).status == 0
        }
        // tapswitch host <-> Linux bridge host, once the sessions are up and the routes exchanged.
        do {
            try waitUntil("VM on host 1 reaches the VM on host 2 over EVPN", timeout: .seconds(60), poll: .milliseconds(200)) {
                try ping(a1, v2ip, count: 1)
            }
        } catch {
            Issue.record("\(error)\n\(frr.map(\.state).joined(separator: "\n"))\n\(d1.log)")
            return
        }
        #expect(try ping(v2, a1ip), "host 2 -> host 1")
        // Remote MACs come from routes only: learning is off on host 1's VXLAN device.
        let link1 = try h1.check(["ip", "-d", "link", "show", "vx100"])
        #expect(link1.contains("nolearning") && link1.contains("master vx100-br"), "\(link1)")
        // Host 2's routes made the ping work; host 3's may still be on their way (each BGP session comes
        // up on its own): wait for them before reading the table.
        var fdb1 = ""
        _ = try? waitUntil("host 3's type-3 route on host 1", timeout: .seconds(20), poll: .milliseconds(100)) {
            fdb1 = try h1.check(["bridge", "fdb", "show", "dev", "vx100"])
            return fdb1.contains("00:00:00:00:00:00 dst 192.0.2.3")
        }
        #expect(fdb1.contains("\(v2mac) dst 192.0.2.2 self extern_learn"), "type-2 route from host 2 not installed:\n\(fdb1)")
        #expect(fdb1.contains("00:00:00:00:00:00 dst 192.0.2.2"), "type-3 route from host 2 not installed:\n\(fdb1)")
        #expect(fdb1.contains("00:00:00:00:00:00 dst 192.0.2.3"), "type-3 route from host 3 not installed:\n\(fdb1)")
        // Host 2 (the reference) learned host 1's VM from host 1's type-2 route.
        try waitUntil("host 2 has \(a1mac) behind 192.0.2.1", timeout: .seconds(10), poll: .milliseconds(100)) {
            try h2.check(["bridge", "fdb", "show", "dev", "vx100"]).contains("\(a1mac) dst 192.0.2.1")
        }

        // MAC+IP: a VM port's known address (here its allowed-ips binding) goes out as a type-2 MAC+IP
        // route; the reference host and the other tapswitch host hold it as a neighbour entry.
        let bound = try await d1.ctl("port", "set", a1port, "allowed-ips=\(a1ip)")
        #expect(bound.status == 0, "port set allowed-ips: \(bound.stderr)")
        do {
            try waitUntil("host 2 has \(a1ip) -> \(a1mac) from a MAC+IP route", timeout: .seconds(15), poll: .milliseconds(100)) {
                let cache = try frr[1].vtysh("show evpn arp-cache vni 100")
                return cache.split(separator: "\n").contains { $0.contains(a1ip + " ") && $0.contains("remote") && $0.contains(a1mac) }
            }
            try waitUntil("host 3's bridge holds \(a1ip)", timeout: .seconds(15), poll: .milliseconds(100)) {
                try h3.check(["ip", "neigh", "show", "dev", "vx100-br"]).contains("\(a1ip) lladdr \(a1mac) extern_learn")
            }
        } catch {
            Issue.record("\(error)\n\(try frr[0].vtysh("show evpn arp-cache vni 100"))\n\(frr.map(\.state).joined(separator: "\n"))\n\(d1.log)")
        }
        #expect(try frr[1].vtysh("show bgp l2vpn evpn route type macip").contains("[\(a1mac)]:[32]:[\(a1ip)]"))
        // The other way, and ARP suppression on tapswitch's bridge: the reference host binds an address
        // its VM does not own (a static neighbour entry, so zebra advertises it); host 1's VM asks for it
        // and gets the answer from host 1's bridge (no host owns the address, so no one else could answer).
        let phantom = "10.78.0.200"
        try h2.check(["ip", "neigh", "replace", phantom, "lladdr", v2mac, "dev", "br100", "nud", "noarp"])
        try waitUntil("host 1's bridge holds \(phantom)", timeout: .seconds(15), poll: .milliseconds(100)) {
            try h1.check(["ip", "neigh", "show", "dev", "vx100-br"]).contains("\(phantom) lladdr \(v2mac) extern_learn")
        }
        #expect(try h1.check(["bridge", "-d", "link", "show", "dev", "vx100"]).contains("neigh_suppress on"))
        let answered = try a1.run(["arping", "-c", "1", "-w", "5", "-I", a1port, phantom], timeout: .seconds(10))
        #expect(answered.status == 0 && answered.stdout.uppercased().contains(v2mac.uppercased()),
                "no ARP answer for \(phantom) from host 1's bridge: \(answered.stdout) \(answered.stderr)")

        // Stopping a VM withdraws its MAC on the other hosts (the route, not ageing: that would take 300 s).
        try await d1.ctl("port", "remove", a1port)
        try waitUntil("host 2 withdraws \(a1mac)", timeout: .seconds(10), poll: .milliseconds(100)) {
            try !h2.check(["bridge", "fdb", "show", "dev", "vx100"]).contains(a1mac)
        }
        try waitUntil("host 2 withdraws \(a1ip)", timeout: .seconds(10), poll: .milliseconds(100)) {
            try !frr[1].vtysh("show evpn arp-cache vni 100").contains(a1ip + " ")
        }

        // Migration: m runs on host 1; host 2's VM pings it every 20 ms.
        #expect(try ping(v2, mip), "host 2 -> m on host 1")
        let log = try TempDir("evpnping")
        cleanup.add("remove \(log.path)") { log.remove() }
        let pingOut = log.file("ping.txt")
        guard FileManager.default.createFile(atPath: pingOut, contents: nil) else { throw TestHelperError("cannot create \(pingOut)") }
        let pinger = ChildProcess()
        pinger.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        pinger.arguments = ["ip", "netns", "exec", v2.name, "ping", "-D", "-n", "-i", "0.02", "-W", "1", "-w", "30", mip]
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: pingOut))
        pinger.standardOutput = handle
        pinger.standardError = FileHandle.nullDevice
        try pinger.run()
        try? handle.close()
        cleanup.add("stop ping") { if pinger.isRunning { pinger.terminate() } }
        try waitUntil("replies from m on host 1", timeout: .seconds(10), poll: .milliseconds(50)) {
            (try? String(contentsOfFile: pingOut, encoding: .utf8))?.contains("bytes from") ?? false
        }
        // Stop on host 1, start on host 3 (same MAC and address), the guest announces itself (GARP).
        try await d1.ctl("port", "remove", mport)
        let added = try await d3.ctl("port", "add-internal", mport, "--mac", mmac, "--netns", m3.name)
        try #require(added.status == 0, "port add-internal on host 3: \(added.stderr)\n\(d3.log)")
        let set = try await d3.ctl("port", "set", mport, "vlan=10")
        try #require(set.status == 0, "port set: \(set.stderr)")
        try m3.check(["ip", "addr", "add", mip + "/24", "dev", mport])
        try m3.check(["ip", "link", "set", mport, "up"])
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let announced = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        try m3.check(["arping", "-U", "-c", "1", "-I", mport, mip])
        // The first reply on host 2 after the announcement: from m, now on host 3.
        var reached: Double?
        try waitUntil("replies from m on host 3", timeout: .seconds(10), poll: .milliseconds(50)) {
            let text = (try? String(contentsOfFile: pingOut, encoding: .utf8)) ?? ""
            reached = text.split(separator: "\n").lazy.compactMap { line -> Double? in
                guard line.contains("bytes from"), line.hasPrefix("["), let close = line.firstIndex(of: "]") else { return nil }
                return Double(line[line.index(after: line.startIndex)..<close])
            }.first { $0 > announced }
            return reached != nil
        }
        let delay = try #require(reached) - announced
        print("EVPN migration: host 2 reached the moved MAC on host 3 \(Int(delay * 1000)) ms after its GARP")
        #expect(delay < 1.0, "MAC move took \(delay) s\n\(frr.map(\.state).joined(separator: "\n"))")
        // Host 2 now sends to host 3's VTEP.
        try waitUntil("host 2 has \(mmac) behind 192.0.2.3", timeout: .seconds(5), poll: .milliseconds(100)) {
            try h2.check(["bridge", "fdb", "show", "dev", "vx100"]).contains("\(mmac) dst 192.0.2.3")
        }
        pinger.terminate()
    }
}

/// FRR's zebra and bgpd in one host namespace, with their own config, sockets, pid files and logs in
/// a temp directory; killed (and the directory removed) by the cleanup.
struct FRR {
    static var available: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/lib/frr/zebra") && FileManager.default.isExecutableFile(atPath: "/usr/lib/frr/bgpd")
    }

    let dir: TempDir
    let host: Netns

    init(host: Netns, index i: Int, peers: [String], cleanup: Cleanup) throws {
        self.host = host
        let dir = try TempDir("frr")
        self.dir = dir
        // The daemons run as user frr (root is not in FRR's vty group): everything here is theirs to read and write.
        try Shell.check(["mkdir", "-p", dir.file("vty")])
        try Shell.check(["chmod", "-R", "0777", dir.path])
        var bgp = """
            frr defaults datacenter
            hostname h\(i)
            router bgp 65000
             bgp router-id 192.0.2.\(i)
             no bgp default ipv4-unicast
            """
        for p in peers { bgp += "\n neighbor \(p) remote-as 65000" }
        bgp += "\n address-family l2vpn evpn"
        for p in peers { bgp += "\n  neighbor \(p) activate" }
        bgp += "\n  advertise-all-vni\n exit-address-family\n"
        let bgpConf = try dir.write("bgpd.conf", bgp)
        let zebraConf = try dir.write("zebra.conf", "hostname h\(i)\n")
        try Shell.check(["chmod", "0666", bgpConf, zebraConf])
        cleanup.add("remove \(dir.path)") {
            if ProcessInfo.processInfo.environment["TAPSWITCH_KEEP_GUEST_LOGS"] == nil { dir.remove() }
        }
        let common = ["-u", "frr", "-g", "frr", "-z", dir.file("zserv.api"), "--vty_socket", dir.file("vty")]
        try Self.spawn(["ip", "netns", "exec", host.name, "/usr/lib/frr/zebra"] + common
                       + ["-i", dir.file("zebra.pid"), "-f", zebraConf, "--log", "file:" + dir.file("zebra.log")], cleanup: cleanup)
        try waitUntil("zebra's socket", timeout: .seconds(10), poll: .milliseconds(20)) { FileManager.default.fileExists(atPath: dir.file("zserv.api")) }
        try Self.spawn(["ip", "netns", "exec", host.name, "/usr/lib/frr/bgpd"] + common
                       + ["-i", dir.file("bgpd.pid"), "-f", bgpConf, "--log", "file:" + dir.file("bgpd.log")], cleanup: cleanup)
    }

    /// Runs an FRR daemon in the foreground (`ip netns exec` execs it: the process is the daemon),
    /// stopped by the cleanup: SIGTERM, SIGKILL after 5 s.
    private static func spawn(_ args: [String], cleanup: Cleanup) throws {
        let p = ChildProcess()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        cleanup.add("stop \(args.dropFirst(4).first ?? "FRR")") {
            if p.isRunning { p.terminate() }
            if (try? waitUntil(timeout: .seconds(5), poll: .milliseconds(20)) { !p.isRunning }) == nil { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
    }

    /// One vtysh command against this host's FRR.
    func vtysh(_ command: String) throws -> String {
        try Shell.check(["vtysh", "--vty_socket", dir.file("vty"), "-c", command], timeout: .seconds(10))
    }

    /// What vtysh says of the sessions and MACs, for failure messages.
    var state: String {
        let sock = dir.file("vty")
        let summary = (try? Shell.run(["vtysh", "--vty_socket", sock, "-c", "show bgp l2vpn evpn summary"], timeout: .seconds(10)).stdout) ?? ""
        let macs = (try? Shell.run(["vtysh", "--vty_socket", sock, "-c", "show evpn mac vni all"], timeout: .seconds(10)).stdout) ?? ""
        return "--- FRR in \(host.name) ---\n\(summary)\n\(macs)"
    }
}
