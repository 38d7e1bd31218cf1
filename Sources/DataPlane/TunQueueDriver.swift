import LinuxNet
import SwitchCore

/// The driver of an internal port: the TAP's own queue, held by tapswitch (its kernel side is a
/// host interface). Frames are `read` one by one and written with one `writev` each, with the
/// virtio-net header (offloads on, so the host stack hands over TSO/GSO superframes).
///
/// ## Concurrency model
/// See ``PortDriver``. It owns the queue; closing it destroys the (non-persistent) TAP.
public final class TunQueueDriver: PortDriver {
    private let queue: TunQueue
    private let buffers: BatchBuffers

    /// The NIC is connected while tapswitch holds the queue: carrier changes do not apply.
    public let followsCarrier = false

    /// The name the queue is kept under for the next daemon process (nil: not kept).
    private var handOverName: String?
    private var handOver: SocketHandOver?

    /// With `handOver` (an internal port in tapswitch's namespace, interface index `index`), a
    /// duplicate of the queue is kept for the next daemon process (``SocketHandOver``), so a
    /// restart finds the port's interface, with its host addresses and routes, still there.
    init(queue: TunQueue, buffers: BatchBuffers, handOver: SocketHandOver? = nil, index: Int32? = nil) {
        self.queue = queue
        self.buffers = buffers
        if let handOver, handOver.isEnabled, let index {
            let key = SocketHandOver.socketName(Self.handOverKind, index: index, device: queue.name)
            queue.keep(in: handOver, as: key)
            handOverName = key
            self.handOver = handOver
        }
    }

    /// The kind in the hand-over name of an internal port's queue (``SocketHandOver/socketName(_:index:device:)``).
    static let handOverKind = "tq"

    deinit { close() }

    public var readiness: PollHandle { queue.pollHandle }

    public func receive(into batch: FrameBatch, max: Int) -> PortReceive {
        switch buffers.rx.read(from: queue, max: max) {
        case .done(let n):
            for i in 0..<n { buffers.commit(slot: i) }
            return .received(n)
        case .wouldBlock: return .received(0)
        case .failed(let code): return .failed(code)
        }
    }

    public func transmit(_ batch: FrameBatch, frames: UnsafeBufferPointer<UInt16>) -> PortTransmit {
        buffers.queue(batch, frames)
        switch buffers.tx.write(to: queue) {
        case .sent(let n): return PortTransmit(TransmitResult(sent: n))
        case .failed(let sent, let code): return PortTransmit(sent: sent, refusal: SendRefusal(errno: code), errno: code)
        }
    }

    public func linkChanged(_ info: LinkInfo) {}
    public func pendingError() -> Int32? { nil }
    public func collectStatistics() {}
    public func addDeviceDrops(to counters: inout PortCounters) {}
    public func close() {
        if let handOverName {
            handOver?.release(name: handOverName)
            self.handOverName = nil
        }
        queue.close()
    }
}
