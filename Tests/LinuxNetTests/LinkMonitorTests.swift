import FakeVM
import LinuxNet
import Testing
import TestSupport

extension Privileged {
    @Suite("LinkMonitor notifications")
    struct LinkMonitorTests {
        init() throws { try Privilege.requireNetAdmin() }

        /// Drains `monitor` until an event satisfies `match`, within `timeout`.
        func waitForEvent(_ monitor: LinkMonitor, _ what: String, timeout: Duration = .seconds(3),
                          _ match: (LinkEvent) -> Bool) throws {
            var seen = false
            try waitUntil(what, timeout: timeout) {
                try monitor.drain { event in if match(event) { seen = true } }
                return seen
            }
        }

        @Test("carrier follows the attached VM; deletion is reported as removed")
        func carrierAndRemoval() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let monitor = try LinkMonitor()
            let link = try makeTap("mon", cleanup: cleanup)
            try waitForEvent(monitor, "admin-up event without carrier") { event in
                if case .changed(let info) = event { return info.index == link.index && info.isUp && !info.hasCarrier }
                return false
            }

            let vm = try FakeVM(tap: link.name)
            try waitForEvent(monitor, "carrier up after attach") { event in
                if case .changed(let info) = event { return info.name == link.name && info.hasCarrier && info.kind == "tun" }
                return false
            }
            vm.close()
            try waitForEvent(monitor, "carrier down after close") { event in
                if case .changed(let info) = event { return info.name == link.name && !info.hasCarrier }
                return false
            }
            try RouteNetlink().deleteLink(link.name)
            try waitForEvent(monitor, "removed after delete") { event in
                event == .removed(index: link.index, name: link.name)
            }
            // Nothing else is pending once drained.
            var extra: [LinkEvent] = []
            try monitor.drain { extra.append($0) }
            #expect(!extra.contains { if case .removed(let index, _) = $0 { index == link.index } else { false } })
        }

        @Test("a tiny receive buffer overruns and reports .overrun")
        func overrun() throws {
            let cleanup = Cleanup()
            defer { cleanup.run() }
            let monitor = try LinkMonitor(receiveBufferSize: 1)  // the kernel rounds up to its minimum
            let link = try makeTap("ovr", cleanup: cleanup, up: false)
            let netlink = try RouteNetlink()
            // Each flip makes a couple of notifications of ~1 KiB; the minimum buffer holds only a few.
            for i in 0..<40 { try netlink.setLink(link.name, mtu: UInt32(1400 + i)) }
            var events: [LinkEvent] = []
            try monitor.drain { events.append($0) }
            #expect(events.contains(.overrun), "got \(events.count) events, none an overrun")
        }
    }
}
