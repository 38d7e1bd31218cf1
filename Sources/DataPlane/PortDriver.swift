import LinuxNet
import SwitchCore

/// How the packet loop moves one port's frames: the only place that knows what backs a port.
///
/// A ``DeviceLayer`` opens the driver once, when the port is plugged in: ``PacketRingDriver`` for a
/// VM TAP or an uplink (AF_PACKET socket with a receive ring), ``TunQueueDriver`` for an internal
/// port (the TAP's own queue fd), an in-memory driver in tests. The loop watches ``readiness`` and
/// calls the rest; it never asks what kind of port it is serving.
///
/// ## Concurrency model
/// A driver is opened on one thread, handed to the packet-loop queue once, and from then on used
/// only there (receive, transmit, statistics, close). It owns its fds, rings and buffers and
/// releases them in ``close()`` (idempotent) or when dropped; nobody else closes them.
public protocol PortDriver: AnyObject {
    /// What the loop watches, level-triggered: readable while ``receive(into:max:)`` has frames or
    /// an error to report, not readable once everything is taken.
    var readiness: PollHandle { get }

    /// true: the NIC follows the device's carrier (QEMU attaching to a TAP, an uplink's link);
    /// false: the NIC is connected for as long as the driver is open (tapswitch holds the device's
    /// only queue).
    var followsCarrier: Bool { get }

    /// Fills the empty `batch`, from slot 0, with up to `max` frames.
    /// - Returns: how many receive units were used (at least the frames committed; fewer than `max`
    ///   means nothing more was pending a moment ago), or the device's errno when it failed.
    func receive(into batch: FrameBatch, max: Int) -> PortReceive

    /// Sends `frames` (indices into `batch`, in order) to the device; the switch counts what was not
    /// sent as dropped with the result's reason.
    func transmit(_ batch: FrameBatch, frames: UnsafeBufferPointer<UInt16>) -> PortTransmit

    /// The device's link changed (a notification on the loop: MTU, address, carrier).
    func linkChanged(_ info: LinkInfo)

    /// The device's pending error after the loop saw ``PollEvents/error`` on ``readiness`` (reading
    /// clears it); nil when there is none.
    func pendingError() -> Int32?

    /// Reads the device's own drop counters (frames lost before the switch saw them). Once a tick
    /// and before a snapshot; not on the frame path.
    func collectStatistics()

    /// Adds the drops collected so far to `counters`, as ingress drop reasons.
    func addDeviceDrops(to counters: inout PortCounters)

    /// Sends from now on through the qdisc (true; packet taps such as `tcpdump -i` see the frames)
    /// or straight to the driver (false, the default; `[switch] transmit`). Drivers whose sends
    /// already pass the kernel's taps (an internal port's queue) ignore it.
    func setTransmitThroughQdisc(_ on: Bool) throws

    /// Releases the device's fds and memory. Idempotent; nothing is called on a closed driver.
    func close()
}

extension PortDriver {
    public func setTransmitThroughQdisc(_ on: Bool) throws {}
}

/// Outcome of ``PortDriver/receive(into:max:)``.
public enum PortReceive: Sendable, Equatable {
    /// This many receive units were used (ring slots, reads); the batch holds the frames among them.
    case received(Int)
    /// The device failed with this errno (it vanished or went down): the loop removes the port.
    case failed(Int32)
}

/// Outcome of ``PortDriver/transmit(_:frames:)``.
public struct PortTransmit: Sendable {
    public var result: TransmitResult
    /// The device's errno when it went down or away: the loop removes the port after this batch.
    public var deviceError: Int32?

    public init(_ result: TransmitResult, deviceError: Int32? = nil) {
        self.result = result
        self.deviceError = deviceError
    }
}

/// The receive and send vectors bound to the runtime's frame batch, shared by every driver of one
/// runtime (they run one at a time, on the packet-loop queue). Slot `i` of the receive vector is the
/// batch's slot `i`, laid out as `[virtio_net_hdr][frame]` with the frame at the batch's frame offset.
///
/// ## Concurrency model
/// Queue-confined, like the batch: created with the runtime, used only on its packet-loop queue.
public final class BatchBuffers {
    let batch: FrameBatch
    let rx: ReceiveVector
    let tx: SendVector
    static let vnetSize = VirtioNetHeader.size

    init(batch: FrameBatch) {
        self.batch = batch
        rx = ReceiveVector(capacity: batch.capacity)
        tx = SendVector(capacity: batch.capacity)
        for i in 0..<batch.capacity {
            let base = batch.slotBase(i) + FrameBatch.frameOffset - Self.vnetSize
            rx.setBuffer(i, base: base, length: batch.slotSize - FrameBatch.frameOffset + Self.vnetSize - FrameBatch.headroom)
        }
    }

    /// Commits receive-vector slot `i` (filled by recvmmsg or read) as the batch's next frame.
    @inline(__always)
    func commit(slot i: Int) {
        let headerSize = Self.vnetSize
        let length = rx.length(i) - headerSize
        // Truncated datagrams (bigger than a slot) and runts without a header are not frames.
        if length < 0 || rx.isTruncated(i) { return }
        let received = batch.slotBase(i) + FrameBatch.frameOffset - headerSize
        let header = VirtioNetHeader(loading: received)
        if batch.count != i {
            // Move the frame down to the next free slot only when a skipped datagram left a gap (rare).
            (batch.slotBase(batch.count) + FrameBatch.frameOffset - headerSize)
                .copyMemory(from: received, byteCount: length + headerSize)
        }
        // The TPID is only looked up (a second walk of the control messages) for tagged frames.
        let tci = rx.vlanTCI(i)
        batch.commitReceived(length: length, vnetHeader: header, vlanTag: tci,
                             vlanTPID: tci == nil ? 0x8100 : rx.vlanTPID(i) ?? 0x8100)
    }

    /// Queues `frames` of `batch` on the send vector, each with its virtio-net header written into
    /// the slot's headroom just before the frame (one iovec per message).
    @inline(__always)
    func queue(_ batch: FrameBatch, _ frames: UnsafeBufferPointer<UInt16>) {
        tx.reset()
        let headerSize = Self.vnetSize
        for index in frames {
            let i = Int(index)
            let h = batch.frame(i) - headerSize
            (batch.virtioHeader(i) ?? VirtioNetHeader()).store(to: h)
            _ = tx.append(header: nil, headerLength: 0, frame: h, frameLength: batch.length(i) + headerSize)
        }
    }

    /// Queues `frames[start...]` again, their headers still in place before the frames (written by
    /// ``queue(_:_:)``).
    func requeue(_ batch: FrameBatch, _ frames: UnsafeBufferPointer<UInt16>, from start: Int) {
        tx.reset()
        for j in start..<frames.count {
            let i = Int(frames[j])
            _ = tx.append(header: nil, headerLength: 0, frame: batch.frame(i) - Self.vnetSize, frameLength: batch.length(i) + Self.vnetSize)
        }
    }
}

/// Carries a driver opened off the packet-loop queue onto it. Nothing uses the driver in between,
/// so nothing is shared: it changes hands once.
struct Handover<Value>: @unchecked Sendable {
    let value: Value
}
