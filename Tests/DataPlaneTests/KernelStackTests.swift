import DataPlane
import FakeVM
import Foundation
import LinuxNet
import SwitchCore
import TestSupport
import Testing

@Suite("Internal and external ports with real kernel stacks", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct KernelStackTests {
    let names = UniqueNames.run

    @Test("two internal ports in two network namespaces: ping and a TCP transfer through tapswitch")
    func internalPorts() async throws {
        try await withRuntime { rt, _, cleanup in
            let ns1 = try Netns(name: names.name("n1"))
            cleanup.add("netns \(ns1.name)") { ns1.delete() }
            let ns2 = try Netns(name: names.name("n2"))
            cleanup.add("netns \(ns2.name)") { ns2.delete() }
            let i1 = names.name("i1"), i2 = names.name("i2")
            try await rt.addInternalPort(name: i1, mac: mac(0x81), netns: ns1.path)
            try await rt.addInternalPort(name: i2, mac: mac(0x82), netns: ns2.path)
            for (ns, dev, ip) in [(ns1, i1, "10.231.7.1/24"), (ns2, i2, "10.231.7.2/24")] {
                _ = try ns.check(["ip", "addr", "add", ip, "dev", dev])
                _ = try ns.check(["ip", "link", "set", dev, "up"])
            }
            let ping = try ns1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.231.7.2"], timeout: .seconds(15))
            #expect(ping.status == 0, "ping failed: \(ping.stdout) \(ping.stderr)")

            // TCP: iperf3 server in ns2 (one test, then exits), client in ns1 sends 20 MB.
            let server = ChildProcess()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/ip")
            server.arguments = ["netns", "exec", ns2.name, "iperf3", "-s", "-1", "-B", "10.231.7.2"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            cleanup.add("iperf3 server") { if server.isRunning { server.terminate() } }
            try waitUntil("iperf3 server listening", timeout: .seconds(10), poll: .milliseconds(20)) {
                try ns2.run(["ss", "-ltn"]).stdout.contains(":5201")
            }
            let client = try ns1.run(["iperf3", "-c", "10.231.7.2", "-n", "20M", "-J"], timeout: .seconds(30))
            #expect(client.status == 0, "iperf3 failed: \(client.stdout.suffix(400)) \(client.stderr)")
            // The sender's 20 MiB crossed the switch (most of it as GSO superframes, so far fewer frames).
            let snapshot = await rt.snapshot()  // one consistent view, taken on the packet loop's queue
            let c1 = try #require(snapshot.ports.first { $0.port.name == i1 }?.counters)
            let c2 = try #require(snapshot.ports.first { $0.port.name == i2 }?.counters)
            #expect(c1.bytesIn > 15_000_000)
            #expect(c2.bytesOut > 15_000_000)
            #expect(c1.framesIn < 15_000_000 / 1514)
        }
    }

    @Test("an external port on a veth whose peer lives in a namespace")
    func externalVeth() async throws {
        try await withRuntime { rt, log, cleanup in
            let ns = try Netns(name: names.name("xn"))
            cleanup.add("netns \(ns.name)") { ns.delete() }
            let up = names.name("xu"), peer = names.name("xp"), tap = names.name("xv")
            let net = try RouteNetlink()
            try net.createVethPair(up, peer)
            cleanup.deleteLink(up)
            try net.moveLink(peer, toNetnsAt: ns.path)
            _ = try ns.check(["ip", "addr", "add", "10.231.8.2/24", "dev", peer])
            _ = try ns.check(["ip", "link", "set", peer, "up"])
            try await rt.addExternalPort(device: up)
            try await rt.startTestVM(tap, mac: mac(0x90), cleanup: cleanup)
            let vm = try FakeVM(tap: tap)
            defer { vm.close() }
            try log.waitFor(.nicConnect, port: tap)
            try log.waitFor(.nicConnect, port: up)
            // ARP who-has 10.231.8.2 from the fake VM: the namespace's kernel answers through the uplink.
            let request = TestFrames.ethernet(
                dst: TestFrames.broadcastMAC, src: mac(0x90).bytes, etherType: 0x0806,
                payload: [0, 1, 8, 0, 6, 4, 0, 1] + mac(0x90).bytes + [10, 231, 8, 1] + [0, 0, 0, 0, 0, 0] + [10, 231, 8, 2]
                    + Array(repeating: 0, count: 18))
            var reply: [UInt8]?
            try waitUntil("ARP reply", timeout: .seconds(5)) {
                try vm.send(request)
                reply = try vm.receive(timeout: .milliseconds(300))
                return reply.map { $0.count >= 42 && $0[12] == 0x08 && $0[13] == 0x06 && $0[21] == 2 } ?? false
            }
            let r = try #require(reply)
            #expect(Array(r[0..<6]) == mac(0x90).bytes)  // addressed to the VM
            #expect(Array(r[28..<32]) == [10, 231, 8, 2])  // sender IP: the namespace
        }
    }
}
