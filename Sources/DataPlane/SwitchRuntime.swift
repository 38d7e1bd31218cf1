import Dispatch
import LinuxNet
import Logging
import PacketCapture
import SwitchCore

/// The running switch: a ``VirtualSwitch`` wired to the host's devices through a ``DeviceLayer``
/// (TAPs, AF_PACKET sockets and netlink on Linux; in memory in tests), driven by a batched Dispatch
/// packet loop.
///
/// ## Concurrency model
/// One serial queue, `queue`, owns everything mutable: the `VirtualSwitch`, the frame batch and
/// its receive/send vectors, the port table (`ports`, `byIndex`), every port's ``PortDriver``, the
/// link-event source and the loop's own link query. The packet loop (``PollLoop``: epoll over the
/// drivers' readiness and the link events, plus the 1 s tick and the extensions' timer deadlines) runs as blocks on that queue, so no
/// state is ever touched from two threads and the packet path takes no locks. (That is what the
/// `@unchecked Sendable` promises.)
///
/// Control requests (`startVM`, `removePort`, `snapshot`, ...) are `async` and hop onto the queue
/// with `loop.async` (queue.async plus a poke that makes the waiting loop yield) and a
/// continuation; blocking device work (creating a TAP, netlink link setup, opening a driver)
/// happens before the hop, in the caller's task, so the packet loop never waits on it, and the
/// driver is handed over once. A control step therefore always runs between two batches, never
/// inside one. The loop's only netlink request (``refreshCarrier(_:)``) goes through its own socket.
///
/// Devices: a port's driver is unwatched and closed by ``PortIO/close()``, on the queue, when the
/// port is deleted, its device fails, or the runtime shuts down. TAPs of VMs are never deleted on
/// shutdown: a restarting daemon re-adopts them and QEMU is not disturbed.
///
/// ## Packet loop
/// Each time a port's driver is ready the loop drains up to `wakeBudget` frames in batches of
/// `batchCapacity`: the driver fills the batch's preallocated slots (from an AF_PACKET receive
/// ring, or `read`s of an internal port's TAP queue), the switch runs the batch through the
/// extension stack, and delivery hands each destination port's frames to its driver in one call
/// (one `sendmmsg` on a transmit-only socket; `ENOBUFS` from a full TAP queue drops the rest of that
/// destination's batch). Nothing is allocated per frame.
public final class SwitchRuntime: @unchecked Sendable {
    /// Owns all state (see the concurrency model). Hop onto it with `loop.async`, never `queue.async`.
    let queue: DispatchQueue
    let logger: Logger
    let sw: VirtualSwitch
    let devices: any DeviceLayer
    let batch: FrameBatch
    let buffers: BatchBuffers
    let wakeBudget: Int
    var ports: [PortID: PortIO] = [:]
    var byIndex: [Int32: PortIO] = [:]
    let loop: PollLoop
    var linkEvents: (any LinkEventSource)?
    var linkEventsWatch: PollLoop.Watch?
    /// The loop's own link queries (never the control plane's socket or lock).
    var loopLinks: (any LinkQuerying)?
    var heartbeat: (@Sendable () -> Void)?
    var eventHandlers: [@Sendable (LifecycleEvent) -> Void] = []
    /// Called when a port's device disappeared or failed and the port was removed by the switch itself.
    var portLostHandler: (@Sendable (String) -> Void)?
    let clockOrigin = DispatchTime.now().uptimeNanoseconds
    var ticks: UInt64 = 0
    var shutDown = false
    /// Ports plugged in are not read yet (see ``holdReceive()``).
    var receiveHeld = false
    var heldPorts: [PortIO] = []
    /// The capture extension while a capture session runs (see `Capture.swift`).
    var capture: CaptureExtension?
    /// The port-mirroring extension while a mirror exists (see `Mirror.swift`).
    var mirror: PortMirrorExtension?
    /// The XDP fast path when `offload = "xdp"` took (see XDPOffload.swift).
    var xdp: XDPOffload?
    /// `[switch] transmit = "qdisc"` (see ``setTransmit(throughQdisc:)``).
    var transmitThroughQdisc = false

    /// - Parameters:
    ///   - configuration: switch settings (ports, batch size, MAC table).
    ///   - devices: the host's devices; nil means ``LinuxDeviceLayer`` (tests pass an in-memory one).
    ///   - wakeBudget: most frames handled per wake-up of one port, so a busy port cannot starve the others.
    ///   - busyPollMicroseconds: longest spin of the loop before it sleeps (see ``PollLoop``); 0 never spins.
    public init(configuration: SwitchConfiguration, devices: (any DeviceLayer)? = nil, wakeBudget: Int = 256,
                busyPollMicroseconds: Int = 50, logger: Logger = Logger(label: "tapswitch.dataplane")) throws {
        queue = DispatchQueue(label: "tapswitch.packet-loop", qos: .userInteractive)
        self.logger = logger
        sw = VirtualSwitch(configuration: configuration)
        self.devices = try devices ?? LinuxDeviceLayer()
        batch = sw.makeBatch()
        buffers = BatchBuffers(batch: batch)
        self.wakeBudget = wakeBudget
        loop = try PollLoop(queue: queue, busyPollLimit: UInt64(max(0, busyPollMicroseconds)) * 1000)
        sw.onEvent = { [unowned self] event in
            for h in eventHandlers { h(event) }
        }
        sw.onDiagnostic = { [logger] message in logger.warning("extension rule violation: \(message)") }
        sw.clock = { PollLoop.now() }
        loop.start()
    }

    /// Starts link monitoring and the 1 s housekeeping timer. Call once.
    public func start() throws {
        let events = try devices.makeLinkEvents()
        let links = try devices.makeLoopLinkQuery()
        try onQueue {
            self.linkEvents = events
            self.loopLinks = links
            linkEventsWatch = try loop.watch(events.readiness) { [unowned self] _ in self.drainLinkEvents() }
            loop.setTick(every: 1_000_000_000) { [unowned self] in self.tick() }
            // Extension timers: the loop wakes for the earliest one even when no frame arrives.
            loop.setDeadlines(next: { [unowned self] in self.sw.nextTimerDeadline }) { [unowned self] in
                self.sw.runTimers(self.batch, to: self)
            }
        }
    }

    /// Stops the packet loop: closes every driver and the link events, leaves TAPs and VMs alone.
    /// Call it before dropping the runtime: the loop's handlers refer to the runtime unowned.
    public func shutdown() async {
        await onQueueAsync {
            self.shutDown = true
            self.stopOffload(reason: "the daemon is stopping")
            for p in self.ports.values { p.close() }
            self.heldPorts.removeAll()
            self.ports.removeAll()
            self.byIndex.removeAll()
            if let w = self.linkEventsWatch { self.loop.unwatch(w) }
            self.linkEventsWatch = nil
            self.linkEvents = nil
            self.loopLinks = nil
            self.loop.halt()
        }
    }

    // MARK: - Observers

    /// Adds an observer of lifecycle events. It runs on the packet-loop queue: keep it short.
    public func addEventHandler(_ handler: @escaping @Sendable (LifecycleEvent) -> Void) {
        loop.async { self.eventHandlers.append(handler) }
    }

    /// Called (on the packet-loop queue) with a port's name after the switch removed it by itself
    /// because its device vanished or failed.
    public func setPortLostHandler(_ handler: @escaping @Sendable (String) -> Void) {
        loop.async { self.portLostHandler = handler }
    }

    /// Runs `body` once a second from the packet loop's own queue: if the loop is stuck, the
    /// heartbeat stops (systemd's watchdog feeds on it).
    public func setHeartbeat(_ body: @escaping @Sendable () -> Void) {
        loop.async { self.heartbeat = body }
    }

    /// Changes the busy-poll limit of the running loop (0 stops spinning).
    public func setBusyPoll(microseconds: Int) async {
        await onQueueAsync { self.loop.busyPollLimit = UInt64(max(0, microseconds)) * 1000 }
    }

    /// `[switch] transmit`: sends to every port, and to ports plugged in later, go through the qdisc
    /// (`true`: `tcpdump -i` on the device sees them) or bypass it. Applied between two batches.
    /// - Returns: the devices where it could not be changed, with why (they keep their old path).
    public func setTransmit(throughQdisc on: Bool) async -> [String] {
        await onQueueAsync {
            self.transmitThroughQdisc = on
            var failed: [String] = []
            for io in self.ports.values where !io.closed {
                do { try io.driver.setTransmitThroughQdisc(on) } catch { failed.append("\(io.device): \(error)") }
            }
            return failed.sorted()
        }
    }

    // MARK: - Queue hops

    func onQueue<T>(_ body: () throws -> T) throws -> T {
        try loop.sync(body)
    }

    func onQueueAsync<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in loop.async { c.resume(returning: body()) } }
    }

    func onQueueThrowing<T: Sendable>(_ body: @escaping @Sendable () throws(SwitchError) -> T) async throws(SwitchError) -> T {
        let result: Result<T, SwitchError> = await withCheckedContinuation { c in
            loop.async {
                do throws(SwitchError) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
            }
        }
        return try result.get()
    }

    // MARK: - Housekeeping

    func tick() {
        ticks &+= 1
        sw.clockNanoseconds = DispatchTime.now().uptimeNanoseconds
        sw.now = (sw.clockNanoseconds - clockOrigin) / 1_000_000_000
        if ticks % 5 == 0 { sw.expireAddresses() }
        if sw.hasPendingFrames { sw.processPending(batch, to: self) }
        collectDeviceStatistics()
        heartbeat?()
    }

    /// Collects the drops every port's device counted (the kernel's ring-full drops: reading resets them).
    func collectDeviceStatistics() {
        for io in ports.values where !io.closed { io.driver.collectStatistics() }
    }
}
