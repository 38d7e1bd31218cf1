import FakeVM
import LinuxNet
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Parent of every suite that touches real devices: one at a time, and only with privileges.
@Suite(.serialized, .enabled(if: Privilege.shouldRun, Privilege.comment))
enum Privileged {}

let names = UniqueNames.run

/// Creates a persistent TAP for a test, registers its deletion, keeps the host stack off it and (by
/// default) sets it up.
func makeTap(_ role: String, cleanup: Cleanup, up: Bool = true, hostStackOff: Bool = true) throws -> LinkInfo {
    let name = names.name(role)
    try TapDevice.createPersistent(name: InterfaceName(name), owner: nil, group: nil)
    cleanup.deleteLink(name)
    let netlink = try RouteNetlink()
    if hostStackOff { try netlink.disableHostStack(name) }
    if up { try netlink.setLink(name, up: true) }
    return try #require(try netlink.link(named: name), "TAP \(name) vanished right after creation")
}

/// ``TapDevice/attach(name:vnetHeader:nonBlocking:createIfMissing:)`` to a TAP this process just
/// created, retrying `EBUSY` briefly: a program that another test spawns in parallel holds a copy of
/// the creating fd from fork to exec (as ``FakeVM`` does too).
func attachFresh(_ name: String, vnetHeader: Bool) throws -> Int32 {
    let deadline = ContinuousClock.now + .seconds(1)
    while true {
        do {
            return try TapDevice.attach(name: InterfaceName(name), vnetHeader: vnetHeader, nonBlocking: true)
        } catch let error as SystemError where error.errno == EBUSY && ContinuousClock.now < deadline {
            usleep(10_000)
        }
    }
}

/// Waits until the kernel's link watcher has marked `name` operationally up, which is also when it activates
/// the qdisc after carrier comes on. Frames sent through the qdisc before that are dropped silently.
func waitForOperUp(_ name: String, timeout: Duration = .seconds(3)) throws {
    let netlink = try RouteNetlink()
    try waitUntil("\(name) operationally up", timeout: timeout) { try netlink.link(named: name)?.isOperUp == true }
}

/// One received slot, copied out for assertions.
struct Received {
    var bytes: [UInt8]
    var truncated: Bool
    var vlanTCI: UInt16?
    var vlanTPID: UInt16?
    var packetType: UInt8?
}

/// A PacketSocket plus a ReceiveVector over owned 64 KiB buffers.
final class Receiver {
    static let slotSize = 65536 + 64
    let socket: PacketSocket
    let vector: ReceiveVector
    private let buffers: UnsafeMutableRawPointer
    private let slots: Int

    init(_ link: LinkInfo, options: PacketSocket.Options, slots: Int = 8) throws {
        socket = try PacketSocket(interfaceIndex: link.index, interfaceName: link.name, options: options)
        vector = ReceiveVector(capacity: slots)
        self.slots = slots
        buffers = .allocate(byteCount: slots * Self.slotSize, alignment: 64)
        for i in 0..<slots { vector.setBuffer(i, base: buffers + i * Self.slotSize, length: Self.slotSize) }
    }

    deinit { buffers.deallocate() }

    var fd: Int32 { socket.fileDescriptor }

    /// Waits up to `timeout` for the socket to become readable, then does one batched receive.
    /// Returns [] on timeout.
    func receive(timeout: Duration) throws -> [Received] {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            switch vector.receive(from: fd, max: slots) {
            case .done(let count):
                return (0..<count).map { i in
                    Received(
                        bytes: Array(UnsafeRawBufferPointer(start: buffers + i * Self.slotSize, count: vector.length(i))),
                        truncated: vector.isTruncated(i), vlanTCI: vector.vlanTCI(i), vlanTPID: vector.vlanTPID(i),
                        packetType: vector.packetType(i))
                }
            case .failed(let code):
                throw SystemError(operation: "recvmmsg", errno: code)
            case .wouldBlock:
                let remaining = clock.now.duration(to: deadline)
                if remaining <= .zero { return [] }
                var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ms = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
                _ = poll(&pollFD, 1, ms)
            }
        }
    }
}

/// Sends `frames` (each preceded by `header`, if any) in one SendVector batch to a socket or, with
/// `tun: true`, with writev to a TAP fd.
func sendBatch(_ frames: [[UInt8]], header: [UInt8]? = nil, to fd: Int32, tun: Bool = false) -> SendResult {
    let vector = SendVector(capacity: max(frames.count, 1))
    let headerBytes = header ?? []
    let total = frames.reduce(0) { $0 + $1.count }
    let storage = UnsafeMutableRawPointer.allocate(byteCount: max(total, 1), alignment: 16)
    defer { storage.deallocate() }
    return headerBytes.withUnsafeBytes { headerPointer in
        var offset = 0
        for frame in frames {
            frame.withUnsafeBytes { (storage + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let appended = vector.append(header: header == nil ? nil : headerPointer.baseAddress, headerLength: headerBytes.count,
                                         frame: storage + offset, frameLength: frame.count)
            precondition(appended)
            offset += frame.count
        }
        return tun ? vector.write(to: fd) : vector.send(to: fd)
    }
}

/// The 10-byte `struct virtio_net_hdr` (little-endian fields).
struct VirtioNetHeader: Equatable, CustomStringConvertible {
    static let needsChecksum: UInt8 = 1
    static let gsoNone: UInt8 = 0
    static let gsoTCPv4: UInt8 = 1

    var flags: UInt8 = 0
    var gsoType: UInt8 = 0
    var headerLength: UInt16 = 0
    var gsoSize: UInt16 = 0
    var checksumStart: UInt16 = 0
    var checksumOffset: UInt16 = 0

    init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    init(_ bytes: [UInt8]) {
        precondition(bytes.count >= 10)
        func le(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
        self.init(flags: bytes[0], gsoType: bytes[1], headerLength: le(2), gsoSize: le(4), checksumStart: le(6), checksumOffset: le(8))
    }

    var bytes: [UInt8] {
        func le(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xff), UInt8(v >> 8)] }
        return [flags, gsoType] + le(headerLength) + le(gsoSize) + le(checksumStart) + le(checksumOffset)
    }

    var description: String {
        "flags=\(flags) gso_type=\(gsoType) hdr_len=\(headerLength) gso_size=\(gsoSize) csum_start=\(checksumStart) csum_offset=\(checksumOffset)"
    }
}

/// An Ethernet + IPv4 + TCP frame with `payloadLength` bytes of pattern, TCP checksum left for offload.
func tcpFrame(dst: [UInt8], src: [UInt8], payloadLength: Int) -> [UInt8] {
    let ipLength = 20 + 20 + payloadLength
    var ip: [UInt8] = [
        0x45, 0x00, UInt8(ipLength >> 8), UInt8(ipLength & 0xff),
        0x12, 0x34, 0x40, 0x00,  // id, DF
        64, 6, 0, 0,  // ttl, TCP, checksum (filled below)
        10, 0, 0, 1, 10, 0, 0, 2,
    ]
    var sum: UInt32 = 0
    for i in stride(from: 0, to: 20, by: 2) { sum += UInt32(ip[i]) << 8 | UInt32(ip[i + 1]) }
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    let checksum = ~UInt16(sum)
    ip[10] = UInt8(checksum >> 8)
    ip[11] = UInt8(checksum & 0xff)
    let tcp: [UInt8] = [
        0x9c, 0x40, 0x13, 0x89,  // ports 40000 -> 5001
        0, 0, 0, 1, 0, 0, 0, 0,  // seq, ack
        0x50, 0x18, 0xff, 0xff,  // data offset 5, PSH|ACK, window
        0, 0, 0, 0,  // checksum (partial, offloaded), urgent
    ]
    let payload = (0..<payloadLength).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
    return dst + src + [0x08, 0x00] + ip + tcp + payload
}
