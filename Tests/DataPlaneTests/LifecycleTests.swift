import DataPlane
import Foundation
import FakeVM
import LinuxNet
import SwitchCore
import TestSupport
import Testing

@Suite("Carrier drives the NIC lifecycle", .serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
struct LifecycleTests {
    let names = UniqueNames.run

    @Test("attach → NIC_CONNECT, close → NIC_DISCONNECT, nothing written while disconnected, reattach reconnects")
    func carrier() async throws {
        try await withRuntime { rt, log, cleanup in
            let a = names.name("la"), b = names.name("lb")
            try await rt.startTestVM(a, mac: mac(0x40), cleanup: cleanup)
            try await rt.startTestVM(b, mac: mac(0x41), cleanup: cleanup)
            #expect(log.kinds(a) == ["port-create", "nic-create"])  // no QEMU yet: not connected

            let vmB = try FakeVM(tap: b)
            defer { vmB.close() }
            var vmA = try FakeVM(tap: a)
            try log.waitFor(.nicConnect, port: a)
            try log.waitFor(.nicConnect, port: b)
            vmA.close()
            try log.waitFor(.nicDisconnect, port: a)
            #expect(log.kinds(a) == ["port-create", "nic-create", "nic-connect", "nic-disconnect"])

            // A broadcast from B while A is disconnected: the switch writes nothing to A's TAP.
            let txBefore = linkStat(a, "tx_packets") + linkStat(a, "tx_dropped")
            let outBefore = try #require(await rt.counters(a)).framesOut
            try vmB.send(TestFrames.broadcast(src: mac(0x41).bytes, payload: Array(repeating: 5, count: 46)))
            try await rt.waitForFramesIn(b, atLeast: 1)
            #expect(linkStat(a, "tx_packets") + linkStat(a, "tx_dropped") == txBefore)
            #expect(try #require(await rt.counters(a)).framesOut == outBefore)

            // QEMU restarts on the same TAP: the port reconnects and traffic resumes.
            vmA = try FakeVM(tap: a)
            defer { vmA.close() }
            try log.waitFor(.nicConnect, port: a, count: 2)
            let frame = TestFrames.broadcast(src: mac(0x41).bytes, payload: Array(repeating: 6, count: 46))
            try vmB.send(frame)
            #expect(try vmA.receive(timeout: .seconds(2)) == frame)
        }
    }

    @Test("a VM that re-attaches and sends at once loses nothing (no waiting for the delayed carrier notification)")
    func reattachSendsAtOnce() async throws {
        try await withRuntime { rt, log, cleanup in
            let a = names.name("qa"), b = names.name("qb")
            try await rt.startTestVM(a, mac: mac(0x44), cleanup: cleanup)
            try await rt.startTestVM(b, mac: mac(0x45), cleanup: cleanup)
            let vmB = try FakeVM(tap: b)
            defer { vmB.close() }
            let first = try FakeVM(tap: a)
            try log.waitFor(.nicConnect, port: a)
            try log.waitFor(.nicConnect, port: b)
            first.close()
            try log.waitFor(.nicDisconnect, port: a)
            // QEMU restarts and the guest talks straight away (DHCP, ARP): before linkwatch reports it.
            let again = try FakeVM(tap: a)
            defer { again.close() }
            var frames: [[UInt8]] = []
            for k in 0..<5 {
                let f = TestFrames.broadcast(src: mac(0x44).bytes, payload: Array(repeating: UInt8(k), count: 46))
                frames.append(f)
                try again.send(f)
            }
            for f in frames { #expect(try vmB.receive(timeout: .seconds(2)) == f) }
            let drops = try #require(await rt.counters(a)).drops
            #expect(drops.isEmpty, "\(drops)")
        }
    }

    @Test("deleting the TAP by hand drives the whole stop sequence; the other port keeps forwarding")
    func tapDeletedByHand() async throws {
        try await withRuntime { rt, log, cleanup in
            let a = names.name("da"), b = names.name("db"), c = names.name("dc")
            for (i, t) in [a, b, c].enumerated() { try await rt.startTestVM(t, mac: mac(UInt8(0x50 + i)), cleanup: cleanup) }
            let vms = try [a, b, c].map { try FakeVM(tap: $0) }
            defer { vms.forEach { $0.close() } }
            for t in [a, b, c] { try log.waitFor(.nicConnect, port: t) }
            _ = try Shell.check(["ip", "link", "del", a])
            try log.waitFor(.portDelete, port: a)
            #expect(log.kinds(a) == ["port-create", "nic-create", "nic-connect", "nic-disconnect", "nic-delete",
                                     "port-teardown", "port-delete"])
            #expect(await rt.snapshot().ports.map(\.port.name).sorted() == [b, c].sorted())
            let frame = TestFrames.broadcast(src: mac(0x51).bytes, payload: Array(repeating: 9, count: 46))
            try vms[1].send(frame)
            #expect(try vms[2].receive(timeout: .seconds(2)) == frame)
        }
    }

    @Test("vm stop: removePort runs the stop sequence and deletes the TAP")
    func removePortDeletesTAP() async throws {
        try await withRuntime { rt, log, cleanup in
            let a = names.name("rm")
            try await rt.startTestVM(a, mac: mac(0x60), cleanup: cleanup)
            let vm = try FakeVM(tap: a)
            try log.waitFor(.nicConnect, port: a)
            vm.close()  // QEMU gone first, as on a real VM stop
            try log.waitFor(.nicDisconnect, port: a)
            try await rt.removePort(named: a)
            #expect(log.kinds(a) == ["port-create", "nic-create", "nic-connect", "nic-disconnect", "nic-delete",
                                     "port-teardown", "port-delete"])
            #expect(try RouteNetlink().link(named: a) == nil)
        }
    }

    @Test("bad requests get clear errors and leave nothing behind")
    func badRequests() async throws {
        try await withRuntime { rt, _, cleanup in
            let a = names.name("ba")
            let badName = await #expect(throws: SwitchError.self) {
                try await rt.startVMNIC(VMNICSpec(vmName: "x", tap: "bad/name", mac: mac(1)))
            }
            #expect(badName?.code == .invalidArgument)
            try await rt.startTestVM(a, mac: mac(0x70), cleanup: cleanup)
            do {
                try await rt.startVMNIC(VMNICSpec(vmName: "x", tap: a, mac: mac(0x71)))
                Issue.record("a second VM on an existing TAP must be refused")
            } catch {
                #expect((error as? SwitchError)?.code == .exists, "\(error)")
                #expect("\(error)".contains(a), "the message names the TAP")
            }
            #expect(await rt.snapshot().ports.count == 1)
        }
    }

    @Test("an internal port whose link setup fails leaves no device and no TAP fd open")
    func internalPortSetupFailureLeaksNothing() async throws {
        try await withRuntime { rt, _, cleanup in
            let name = names.name("il")
            cleanup.deleteLink(name)
            let before = tunQueues()
            // MTU 10 is below the TAP's minimum (68): the link setup fails after the queue is attached,
            // made non-persistent and given its offloads.
            do {
                try await rt.addInternalPort(name: name, mac: mac(0x90), mtu: 10)
                Issue.record("MTU 10 must be refused")
            } catch {
                #expect("\(error)".contains(name), "the error names the port: \(error)")
            }
            #expect(try RouteNetlink().link(named: name) == nil, "no device left")
            // A leaked queue fd shows as a new TUN fd, detached (its TAP was deleted) or still on the TAP.
            let leaked = tunQueues().filter { fd, iff in before[fd] == nil && (iff.isEmpty || iff == name) }
            #expect(leaked.isEmpty, "TAP queue fds left open: \(leaked)")
            #expect(await rt.snapshot().ports.isEmpty)
            // The name is usable again, and the port's queue goes with the port.
            try await rt.addInternalPort(name: name, mac: mac(0x90))
            #expect(tunQueues().values.filter { $0 == name }.count == 1)
            try await rt.removePort(named: name)
            #expect(tunQueues().values.filter { $0 == name }.isEmpty)
        }
    }
}

/// This process's TUN queue fds: fd number -> the interface each is attached to ("" once detached),
/// from tun's fdinfo line `iff:\tNAME`.
func tunQueues() -> [String: String] {
    let dir = "/proc/self/fdinfo"
    var result: [String: String] = [:]
    for fd in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
        guard let text = try? String(contentsOfFile: dir + "/" + fd, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n") where line.hasPrefix("iff:") {
            result[fd] = String(line.dropFirst(4)).trimmingCharacters(in: .whitespaces)
        }
    }
    return result
}
