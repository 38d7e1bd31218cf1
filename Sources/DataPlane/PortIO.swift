import Dispatch
import LinuxNet
import SwitchCore

/// The I/O side of one port: its fd and read source.
///
/// Owned by the packet-loop queue: created, read, written and cancelled only there. The fd is
/// closed by the read source's cancel handler (so a read already scheduled never sees a closed or
/// reused fd), or directly if no source was ever started.
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
    var interfaceIndex: Int32
    /// Internal ports: the fd is the TAP itself, read with read() and written with writev().
    var isTUN: Bool { if case .internalTAP = backing { true } else { false } }
    var source: (any DispatchSourceRead)?
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

    /// Starts reading. `handler` runs on `queue` whenever the fd is readable.
    func start(on queue: DispatchQueue, _ handler: @escaping () -> Void) {
        let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        let fd = self.fd
        s.setEventHandler(handler: handler)
        s.setCancelHandler { _ = Glibc.close(fd) }
        source = s
        s.resume()
    }

    /// Stops reading and closes the fd (through the cancel handler). Idempotent.
    func close() {
        guard !closed else { return }
        closed = true
        if segmentingFD >= 0 { _ = Glibc.close(segmentingFD) }
        if let s = source {
            s.cancel()
            source = nil
        } else {
            _ = Glibc.close(fd)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
