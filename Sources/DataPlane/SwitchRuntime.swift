import CTapShim
import Dispatch
import LinuxNet
import Logging
import SwitchCore

#if canImport(Glibc)
import Glibc
#endif

/// The running switch on Linux: a ``VirtualSwitch`` wired to TAPs, AF_PACKET sockets and netlink
/// link monitoring, driven by a batched Dispatch packet loop.
///
/// ## Concurrency model
/// One serial queue, `queue`, owns everything mutable: the `VirtualSwitch`, the frame batch and
/// the receive/send vectors, the port table (`ports`, `byIndex`, `byName`), every port's fd, and
/// the link monitor. The packet loop (``PollLoop``: epoll over the ports' fds and the link
/// monitor, plus the 1 s tick) runs as blocks on that queue, so no state is ever touched from two
/// threads and the packet path takes no locks. (That is what the `@unchecked Sendable` promises.)
///
/// Control requests (`startVM`, `removePort`, `snapshot`, ...) are `async` and hop onto the queue
/// with `loop.async` (queue.async plus a poke that makes the waiting loop yield) and a
/// continuation; blocking device work (creating a TAP, netlink link setup) happens before the
/// hop, in the caller's task, so the packet loop never waits on it. A control step therefore
/// always runs between two batches, never inside one.
///
/// fds: a port's fd is unwatched and closed by ``PortIO/close()``, on the queue, when the port is
/// deleted, its device fails, or the runtime shuts down. TAPs of VMs are never deleted on
/// shutdown: a restarting daemon re-adopts them and QEMU is not disturbed.
///
/// ## Packet loop
/// Each time a port's fd is readable the loop drains up to `wakeBudget` frames in batches of
/// `batchCapacity`: frames are copied from the port's receive ring (a frame too big for a ring
/// slot is read whole from the socket queue; internal ports are a run of `read`s on the TUN fd)
/// into the batch's preallocated slots, the switch runs the batch through the extension stack,
/// and delivery does one `sendmmsg` per destination port on its transmit-only socket. `ENOBUFS`
/// from a full TAP queue drops the rest of that destination's batch. Nothing is allocated per frame.
public final class SwitchRuntime: @unchecked Sendable {
    /// Owns all state (see the concurrency model). Hop onto it with `loop.async`, never `queue.async`.
    let queue: DispatchQueue
    let logger: Logger
    let sw: VirtualSwitch
    let net: RouteNetlink
    let batch: FrameBatch
    let rx: ReceiveVector
    let tx: SendVector
    let wakeBudget: Int
    var ports: [PortID: PortIO] = [:]
    var byIndex: [Int32: PortIO] = [:]
    let loop: PollLoop
    var monitor: LinkMonitor?
    var monitorWatch: PollLoop.Watch?
    var heartbeat: (@Sendable () -> Void)?
    var eventHandlers: [@Sendable (LifecycleEvent) -> Void] = []
    /// Called when a port's device disappeared or failed and the port was removed by the switch itself.
    var portLostHandler: (@Sendable (String) -> Void)?
    let clockOrigin = DispatchTime.now().uptimeNanoseconds
    var ticks: UInt64 = 0
    var shutDown = false

    static let vnetSize = VirtioNetHeader.size

    /// - Parameters:
    ///   - configuration: switch settings (ports, batch size, MAC table).
    ///   - wakeBudget: most frames handled per wake-up of one port, so a busy port cannot starve the others.
    ///   - busyPollMicroseconds: longest spin of the loop before it sleeps (see ``PollLoop``); 0 never spins.
    public init(configuration: SwitchConfiguration, wakeBudget: Int = 256, busyPollMicroseconds: Int = 50,
                logger: Logger = Logger(label: "tapswitch.dataplane")) throws {
        queue = DispatchQueue(label: "tapswitch.packet-loop", qos: .userInteractive)
        self.logger = logger
        sw = VirtualSwitch(configuration: configuration)
        net = try RouteNetlink()
        batch = sw.makeBatch()
        rx = ReceiveVector(capacity: batch.capacity)
        tx = SendVector(capacity: batch.capacity)
        self.wakeBudget = wakeBudget
        loop = try PollLoop(queue: queue, busyPollLimit: UInt64(max(0, busyPollMicroseconds)) * 1000)
        // Every slot receives [virtio_net_hdr][frame] with the frame at the batch's frame offset.
        for i in 0..<batch.capacity {
            let base = batch.slotBase(i) + FrameBatch.frameOffset - Self.vnetSize
            rx.setBuffer(i, base: base, length: batch.slotSize - FrameBatch.frameOffset + Self.vnetSize - FrameBatch.headroom)
        }
        sw.onEvent = { [unowned self] event in
            for h in eventHandlers { h(event) }
        }
        sw.onDiagnostic = { [logger] message in logger.warning("extension rule violation: \(message)") }
        loop.start()
    }

    /// Starts link monitoring and the 1 s housekeeping timer. Call once.
    public func start() throws {
        let monitor = try LinkMonitor()
        try onQueue {
            self.monitor = monitor
            monitorWatch = try loop.watch(monitor.fileDescriptor) { [unowned self] _ in self.drainLinkEvents() }
            loop.setTick(every: 1_000_000_000) { [unowned self] in self.tick() }
        }
    }

    /// Stops the packet loop: closes every socket and the monitor, leaves TAPs and VMs alone.
    /// Call it before dropping the runtime: the loop's handlers refer to the runtime unowned.
    public func shutdown() async {
        await onQueueAsync {
            self.shutDown = true
            for p in self.ports.values { p.close() }
            self.ports.removeAll()
            self.byIndex.removeAll()
            if let w = self.monitorWatch { self.loop.unwatch(w) }
            self.monitorWatch = nil
            self.monitor = nil
            self.loop.stop()
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

    // MARK: - Queue hops

    func onQueue<T>(_ body: () throws -> T) throws -> T {
        try loop.sync(body)
    }

    func onQueueAsync<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in loop.async { c.resume(returning: body()) } }
    }

    func onQueueThrowing<T: Sendable>(_ body: @escaping @Sendable () throws(DataPlaneError) -> T) async throws(DataPlaneError) -> T {
        let result: Result<T, DataPlaneError> = await withCheckedContinuation { c in
            loop.async {
                do throws(DataPlaneError) { c.resume(returning: .success(try body())) } catch { c.resume(returning: .failure(error)) }
            }
        }
        return try result.get()
    }

    // MARK: - Housekeeping

    func tick() {
        ticks &+= 1
        sw.now = (DispatchTime.now().uptimeNanoseconds - clockOrigin) / 1_000_000_000
        if ticks % 5 == 0 { sw.expireAddresses() }
        if sw.hasPendingFrames { sw.processPending(batch, to: self) }
        collectRingStatistics()
        heartbeat?()
    }

    /// Adds the kernel's ring-full drops of every port to its counters (reading them resets them).
    func collectRingStatistics() {
        for io in ports.values where !io.closed {
            if let ring = io.ring, let stats = try? ring.statistics() { io.ringFull &+= UInt64(stats.dropped) }
        }
    }
}
