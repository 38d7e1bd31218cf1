import LinuxNet
import SwitchCore

/// One plugged-in port on the loop: its driver, its registration in the packet loop and the link
/// state last seen. What backs the port is the driver's business alone.
///
/// Owned by the packet-loop queue: created, read, written and closed only there. ``close()``
/// unwatches before the driver closes, and the loop ignores events of a stale registration, so a
/// handler never sees a closed or reused fd.
final class PortIO {
    let id: PortID
    let device: String
    /// For `show` and for what removal does with the device; the packet path never looks at it.
    let backing: PortBacking
    let driver: any PortDriver
    /// The device's interface index in tapswitch's namespace; nil when it lives in another one
    /// (an internal port moved into a netns), where link notifications do not reach.
    let linkIndex: Int32?
    var watch: PollLoop.Watch?
    weak var loop: PollLoop?
    var closed = false
    /// Last carrier state seen from netlink (duplicate notifications are ignored).
    var lastCarrier: Bool?
    var lastMTU: UInt32 = 0
    var lastMAC: [UInt8] = []
    /// The fast path's attachment to a VM TAP (see XDPOffload.swift), detached with the port.
    var xdpLink: XDPLink?
    /// The fast path's skb-level attachment (tcx ingress), detached with the port.
    var tcxLink: TCXLink?

    init(id: PortID, device: String, backing: PortBacking, driver: any PortDriver, linkIndex: Int32?) {
        self.id = id
        self.device = device
        self.backing = backing
        self.driver = driver
        self.linkIndex = linkIndex
    }

    /// Starts reading. `handler` runs on the loop's queue whenever the driver is ready.
    func start(on loop: PollLoop, _ handler: @escaping (PollEvents) -> Void) throws(SwitchError) {
        watch = try loop.watch(driver.readiness, handler)
        self.loop = loop
    }

    /// Stops reading and closes the driver. Idempotent.
    func close() {
        guard !closed else { return }
        closed = true
        if let watch { loop?.unwatch(watch) }
        watch = nil
        xdpLink?.close()
        xdpLink = nil
        tcxLink?.close()
        tcxLink = nil
        driver.close()
    }
}
