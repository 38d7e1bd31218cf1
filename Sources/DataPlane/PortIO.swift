import Dispatch
import LinuxNet
import SwitchCore

/// The I/O side of one port: its fd and its registration in the packet loop.
///
/// Owned by the packet-loop queue: created, read, written and closed only there. ``close()``
/// unwatches before closing, and the loop ignores events of a stale registration, so a handler
/// never sees a closed or reused fd.
final class PortIO {
    let id: PortID
    let device: String
    let backing: PortBacking
    /// AF_PACKET socket (VM TAPs, uplinks) or the TUN fd (internal ports).
    let fd: Int32
    /// Transmit-only AF_PACKET socket through the qdisc (-1 if none). The kernel segments a GSO
    /// superframe there when the TAP's reader has not enabled offloads, where the bypass socket
    /// refuses it with ENOBUFS (a guest before offload negotiation, or with offloads off).
    var segmentingFD: Int32 = -1
    /// Transmit-only AF_PACKET socket with qdisc bypass (-1: send on `fd`). Not in the epoll set:
    /// each sent frame's release calls the socket's write-space callback, which on a watched
    /// socket walks its wait queue into epoll, once per frame.
    var transmitFD: Int32 = -1
    /// Where frames to this port are sent.
    var sendFD: Int32 { transmitFD >= 0 ? transmitFD : fd }
    var interfaceIndex: Int32
    /// Internal ports: the fd is the TAP itself, read with read() and written with writev().
    var isTUN: Bool { if case .internalTAP = backing { true } else { false } }
    /// The AF_PACKET socket's receive ring (VM TAPs, uplinks); nil for internal ports.
    var ring: ReceiveRing?
    /// Frames the kernel dropped because the ring was full (`PACKET_STATISTICS`, summed by the tick).
    var ringFull: UInt64 = 0
    /// Frames bigger than a ring slot that the kernel could not also queue (receive buffer full).
    var oversizedLost: UInt64 = 0
    var watch: PollLoop.Watch?
    weak var loop: PollLoop?
    var closed = false
    /// Last carrier state seen from netlink (duplicate notifications are ignored).
    var lastCarrier: Bool?
    var lastMTU: UInt32 = 0
    var lastMAC: [UInt8] = []

    init(id: PortID, device: String, backing: PortBacking, fd: Int32, interfaceIndex: Int32) {
        self.id = id
        self.device = device
        self.backing = backing
        self.fd = fd
        self.interfaceIndex = interfaceIndex
    }

    /// Starts reading. `handler` runs on the loop's queue whenever the fd is readable.
    func start(on loop: PollLoop, _ handler: @escaping (UInt32) -> Void) throws(DataPlaneError) {
        watch = try loop.watch(fd, handler)
        self.loop = loop
    }

    /// Drops that happened before the switch saw the frame, as ingress drop reasons.
    func addKernelDrops(to counters: inout PortCounters) {
        if ringFull > 0 { counters.drops[.init(direction: .ingress, reason: "receive ring full"), default: 0] += ringFull }
        if oversizedLost > 0 {
            counters.drops[.init(direction: .ingress, reason: "oversized frame lost (receive buffer full)"), default: 0] += oversizedLost
        }
    }

    /// Stops reading and closes the fd. Idempotent.
    func close() {
        guard !closed else { return }
        closed = true
        if segmentingFD >= 0 { _ = Glibc.close(segmentingFD) }
        if transmitFD >= 0 { _ = Glibc.close(transmitFD) }
        if let watch { loop?.unwatch(watch) }
        watch = nil
        ring = nil  // unmapped before the fd goes
        _ = Glibc.close(fd)
    }
}

#if canImport(Glibc)
import Glibc
#endif
