import FakeVM
import Foundation
import LinuxNet
import Synchronization
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

extension Privileged {
    @Suite("TapDevice and RouteNetlink on real devices")
    struct TapDeviceTests {
        init() throws {
            try Privilege.requireNetAdmin()
            ignoreSIGPIPE()
        }

        @Test("a TAP created while other threads spawn processes is not held by them: it attaches at once (no EBUSY)")
        func creationSurvivesConcurrentSpawns() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            // Another thread spawns short-lived processes the whole time: each starts with a copy of the
            // process's fd table and holds it until it execs.
            let stop = Atomic<Bool>(false)
            let spawner = Thread {
                while !stop.load(ordering: .relaxed) {
                    let p = ChildProcess()
                    p.executableURL = URL(fileURLWithPath: "/bin/true")
                    try? p.run()
                    p.waitUntilExit()
                }
            }
            spawner.start()
            defer { stop.store(true, ordering: .relaxed) }
            for i in 0..<100 {
                let name = names.name("sp\(i)")
                try TapDevice.createPersistent(name: InterfaceName(name), owner: nil, group: nil)
                cleanup.deleteLink(name)
                let vm = try FakeVM(tap: name)  // EBUSY if a spawned child still held the creating fd
                vm.close()
            }
        }

        @Test("createPersistent makes a persistent, owned TAP and keeps no fd open")
        func createPersistent() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let name = names.name("own")
            let tapName = try InterfaceName(name)
            try TapDevice.createPersistent(name: tapName, owner: 4242, group: 4343)
            cleanup.deleteLink(name)

            let netlink = try RouteNetlink()
            let link = try #require(try netlink.link(named: name))
            #expect(link.kind == "tun")
            #expect(link.mac.count == 6)
            #expect(!link.hasCarrier, "nobody is attached yet")
            #expect(TapDevice.isTap(name))
            #expect(!TapDevice.isTap("lo"))

            let attributes = try #require(TapDevice.attributes(name))
            let iffTap: UInt32 = 0x0002, iffNoPI: UInt32 = 0x1000, iffVnetHdr: UInt32 = 0x4000, iffPersist: UInt32 = 0x0800
            #expect(attributes.flags & (iffTap | iffNoPI | iffVnetHdr | iffPersist) == iffTap | iffNoPI | iffVnetHdr | iffPersist,
                    "tun_flags 0x\(String(attributes.flags, radix: 16))")
            #expect(attributes.owner == 4242)
            #expect(attributes.group == 4343)

            // No fd is held: a "QEMU" can attach, and a second one is refused with EBUSY.
            let vm = try FakeVM(tap: name)
            #expect {
                _ = try FakeVM(tap: name)
            } throws: { error in
                (error as? SystemError)?.errno == EBUSY && "\(error)" == "TUNSETIFF on '\(name)': Device or resource busy (EBUSY)"
            }
            vm.close()
            // After the first detaches, attaching works again (and the device survived: persistent).
            let again = try FakeVM(tap: name)
            again.close()
            #expect(try netlink.link(named: name) != nil)
        }

        @Test("createPersistent refuses an existing name instead of re-attaching")
        func refusesExisting() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("dup", cleanup: cleanup, up: false)
            #expect {
                try TapDevice.createPersistent(name: InterfaceName(link.name), owner: nil, group: nil)
            } throws: { error in
                (error as? SystemError)?.errno == EEXIST && "\(error)".contains("already exists")
            }
            // Also for a non-TAP link of that name.
            #expect(throws: SystemError.self) { try TapDevice.createPersistent(name: InterfaceName("lo"), owner: nil, group: nil) }
        }

        @Test("attach refuses a missing TAP instead of creating a fresh one")
        func attachMissing() throws {
            let name = names.name("absent")
            #expect {
                _ = try FakeVM(tap: name)
            } throws: { error in
                "\(error)" == "attach TAP on '\(name)': No such device (ENODEV): no such TAP (create it first with TapDevice.createPersistent)"
            }
            #expect(try RouteNetlink().link(named: name) == nil)
        }

        @Test("multi-queue must match between creation and attach")
        func multiQueueMismatch() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let name = names.name("mq")
            try TapDevice.createPersistent(name: InterfaceName(name), owner: nil, group: nil, multiQueue: true)
            cleanup.deleteLink(name)
            #expect {
                _ = try FakeVM(tap: name)
            } throws: { error in
                (error as? SystemError)?.errno == EINVAL
            }
        }

        @Test("deleteLink removes a TAP even while a VM holds it")
        func deleteWhileAttached() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("del", cleanup: cleanup)
            let vm = try FakeVM(tap: link.name)
            defer { vm.close() }
            let netlink = try RouteNetlink()
            try netlink.deleteLink(link.name)
            #expect(try netlink.link(named: link.name) == nil)
            #expect(try netlink.link(index: link.index) == nil)
            // Deleting again names the device and libnl's reason.
            #expect {
                try netlink.deleteLink(link.name)
            } throws: { error in
                "\(error)".hasPrefix("rtnl_link_delete on '\(link.name)': ")
            }
        }

        @Test("setLink changes MAC, MTU and admin state; links() lists the device")
        func setLink() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let link = try makeTap("set", cleanup: cleanup, up: false)
            #expect(!link.isUp)
            let netlink = try RouteNetlink()
            let mac: [UInt8] = [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]
            try netlink.setLink(link.name, mac: mac, mtu: 9000, up: true)
            let changed = try #require(try netlink.link(named: link.name))
            #expect(changed.mac == mac)
            #expect(changed.mtu == 9000)
            #expect(changed.isUp)
            #expect(changed.index == link.index)
            try netlink.setLink(link.name, up: false)
            #expect(try netlink.link(index: link.index)?.isUp == false)
            let all = try netlink.links()
            #expect(all.contains { $0.name == link.name && $0.mtu == 9000 })
            #expect(all.contains { $0.name == "lo" })
            #expect {
                try netlink.setLink(names.name("nosuch"), up: true)
            } throws: { error in
                (error as? NetlinkError)?.device == names.name("nosuch")
            }
        }

        @Test("disableHostStack keeps IPv6 autoconfiguration off the TAP")
        func disableHostStack() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            // Control: a TAP with the host stack on gets a link-local address once it has carrier.
            let control = try makeTap("v6on", cleanup: cleanup, hostStackOff: false)
            let quiet = try makeTap("v6off", cleanup: cleanup)
            let vm1 = try FakeVM(tap: control.name)
            let vm2 = try FakeVM(tap: quiet.name)
            defer {
                vm1.close()
                vm2.close()
            }
            func inet6(_ name: String) throws -> String {
                try Shell.check(["ip", "-6", "-o", "addr", "show", "dev", name])
            }
            try waitUntil("link-local address on the control TAP", timeout: .seconds(5)) { try inet6(control.name).contains("fe80") }
            #expect(try inet6(quiet.name).isEmpty)
            let conf = "/proc/sys/net/ipv6/conf/\(quiet.name)/"
            #expect(try String(contentsOfFile: conf + "disable_ipv6", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == "1")
            #expect(try String(contentsOfFile: conf + "addr_gen_mode", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        }

        @Test("veth pair: create, move one end into a netns")
        func vethIntoNetns() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let a = names.name("va"), b = names.name("vb")
            let netlink = try RouteNetlink()
            try netlink.createVethPair(a, b)
            cleanup.deleteLink(a)
            #expect(try netlink.link(named: a)?.kind == "veth")
            #expect(try netlink.link(named: b)?.kind == "veth")
            let ns = try Netns(name: names.name("ns"))
            cleanup.add("delete netns \(ns.name)") { ns.delete() }
            try netlink.moveLink(b, toNetnsAt: ns.path)
            #expect(try netlink.link(named: b) == nil)
            #expect(try netlink.link(named: a) != nil)
            let inside = try ns.check(["ip", "-o", "link", "show", b])
            #expect(inside.contains(b))
            #expect {
                try netlink.moveLink(a, toNetnsAt: "/run/netns/\(names.name("none"))")
            } throws: { error in
                (error as? SystemError)?.errno == ENOENT
            }
        }
    }
}
