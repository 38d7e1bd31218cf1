import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// Persistent TAP devices for VM NICs, and attaching to them the way QEMU does.
///
/// A VM's TAP is created once, persistent and owned by the QEMU user, and the creating fd is closed at once:
/// a single-queue TAP accepts only one attached fd, so holding it would make QEMU's `TUNSETIFF` fail with
/// `EBUSY`. Delete a TAP with ``RouteNetlink/deleteLink(_:)``, which works even while QEMU holds it.
/// All of this needs `CAP_NET_ADMIN`.
public enum TapDevice {
    /// Creates a persistent TAP named `name` with a virtio-net header (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`).
    ///
    /// - Parameters:
    ///   - owner: uid allowed to attach without `CAP_NET_ADMIN` (`TUNSETOWNER`).
    ///   - group: gid allowed to attach (`TUNSETGROUP`).
    ///   With neither, the TAP is root-only: the owner is set to uid 0. (A TAP with no owner and no
    ///   group is attachable by every user who can open `/dev/net/tun`, and that user then *is* the
    ///   VM's NIC.) Processes with `CAP_NET_ADMIN` can always attach.
    ///   - multiQueue: create with `IFF_MULTI_QUEUE`. Must match how QEMU attaches (`queues>1`), or its
    ///     `TUNSETIFF` fails with `EINVAL`.
    /// - Throws: ``SystemError`` with `EEXIST` if any link of that name exists (checked first, because
    ///   `TUNSETIFF` on an existing persistent TAP would silently attach to it instead of failing), or the
    ///   failing ioctl. On failure nothing is left behind: the device is only made persistent last.
    /// The creating fd lives on a thread with its own fd table, so no process spawned meanwhile can keep
    /// the new TAP attached (see ``onPrivateFileTable(_:)``).
    ///   - beforePersist: runs while the new TAP exists but is not yet persistent (closing the creating
    ///     fd would still destroy it), e.g. to set its alias: a crash before it completes leaves no TAP,
    ///     so every persistent TAP made here carries what it set.
    public static func createPersistent(name: InterfaceName, owner: UInt32?, group: UInt32?, multiQueue: Bool = false,
                                        beforePersist: () throws -> Void = {}) throws {
        try onPrivateFileTable { () throws in
            try create(name: name, owner: owner, group: group, multiQueue: multiQueue, beforePersist: beforePersist)
        }
    }

    private static func create(name: InterfaceName, owner: UInt32?, group: UInt32?, multiQueue: Bool,
                               beforePersist: () throws -> Void) throws {
        if if_nametoindex(name.value) != 0 {
            throw SystemError(operation: "create TAP", device: name.value, errno: EEXIST,
                              detail: "a link with this name already exists")
        }
        var flags = TS_IFF_TAP | TS_IFF_NO_PI | TS_IFF_VNET_HDR
        if multiQueue { flags |= TS_IFF_MULTI_QUEUE }
        let fd = try open(name: name.value, flags: flags, nonBlocking: false)
        // Closing a non-persistent TAP's last fd deletes it, so an error below leaves nothing behind.
        defer { close(fd) }
        if let owner = owner ?? (group == nil ? 0 : nil) {
            try systemCall("TUNSETOWNER", device: name.value) { ts_ioctl_ulong(fd, TS_TUNSETOWNER, UInt(owner)) }
        }
        if let group {
            try systemCall("TUNSETGROUP", device: name.value) { ts_ioctl_ulong(fd, TS_TUNSETGROUP, UInt(group)) }
        }
        try beforePersist()
        try systemCall("TUNSETPERSIST", device: name.value) { ts_ioctl_ulong(fd, TS_TUNSETPERSIST, 1) }
    }

    /// Opens `/dev/net/tun` and attaches to the TAP `name` exactly as QEMU's `-netdev tap,ifname=` does
    /// (`IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` when `vnetHeader`). Raises the TAP's carrier.
    ///
    /// - Parameter createIfMissing: `TUNSETIFF` on a name that does not exist creates a new, non-persistent TAP
    ///   (which is what QEMU gets). By default that is refused with `ENODEV` so a typo cannot silently attach to
    ///   a fresh, unconnected device.
    /// - Returns: the queue fd, owned by the caller (close it to detach).
    /// - Throws: ``SystemError``; `EBUSY` if another fd is attached to a single-queue TAP, `EINVAL` if the TAP's
    ///   multi-queue flag differs, `ENODEV` if it does not exist (unless `createIfMissing`).
    public static func attach(name: InterfaceName, vnetHeader: Bool, nonBlocking: Bool, createIfMissing: Bool = false) throws -> Int32 {
        if !createIfMissing && if_nametoindex(name.value) == 0 {
            throw SystemError(operation: "attach TAP", device: name.value, errno: ENODEV,
                              detail: "no such TAP (create it first with TapDevice.createPersistent)")
        }
        var flags = TS_IFF_TAP | TS_IFF_NO_PI
        if vnetHeader { flags |= TS_IFF_VNET_HDR }
        return try open(name: name.value, flags: flags, nonBlocking: nonBlocking)
    }

    /// Tells the kernel which offloads the reader of `fd` accepts (`TUNSETOFFLOAD`), as QEMU does once the
    /// guest's virtio-net driver negotiates them. With `tso4`/`tso6` the kernel passes GSO superframes with a
    /// virtio-net header instead of segmenting them. TSO requires `csum` (the kernel says `EINVAL` otherwise).
    public static func setOffload(fd: Int32, csum: Bool, tso4: Bool, tso6: Bool) throws {
        var flags: UInt32 = 0
        if csum { flags |= TS_TUN_F_CSUM }
        if tso4 { flags |= TS_TUN_F_TSO4 }
        if tso6 { flags |= TS_TUN_F_TSO6 }
        try systemCall("TUNSETOFFLOAD") { ts_ioctl_ulong(fd, TS_TUNSETOFFLOAD, UInt(flags)) }
    }

    /// True if `name` is a TUN/TAP device (it has `/sys/class/net/NAME/tun_flags`).
    public static func isTap(_ name: String) -> Bool {
        guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else { return false }
        return access("/sys/class/net/\(name)/tun_flags", F_OK) == 0
    }

    /// The TAP's sysfs attributes (`tun_flags`, `owner`, `group`), or nil if `name` is not a TUN/TAP device.
    /// `owner`/`group` are nil when unrestricted (sysfs shows -1).
    public static func attributes(_ name: String) -> (flags: UInt32, owner: UInt32?, group: UInt32?)? {
        guard isTap(name) else { return nil }
        let base = "/sys/class/net/\(name)/"
        guard let flagsText = readSmallFile(base + "tun_flags"),
              let flags = UInt32(flagsText.hasPrefix("0x") ? String(flagsText.dropFirst(2)) : flagsText, radix: 16)
        else { return nil }
        func id(_ file: String) -> UInt32? {
            guard let text = readSmallFile(base + file), let value = Int64(text), value >= 0 else { return nil }
            return UInt32(truncatingIfNeeded: value)
        }
        return (flags, id("owner"), id("group"))
    }

    private static func open(name: String, flags: UInt16, nonBlocking: Bool) throws(SystemError) -> Int32 {
        var openFlags = O_RDWR | O_CLOEXEC
        if nonBlocking { openFlags |= O_NONBLOCK }
        let fd = try systemCall("open /dev/net/tun", device: name) { Glibc.open("/dev/net/tun", openFlags) }
        var request = ts_ifreq()
        withUnsafeMutableBytes(of: &request.name) { raw in
            let bytes = Array(name.utf8.prefix(Int(IFNAMSIZ) - 1))
            raw.copyBytes(from: bytes)
        }
        request.flags = flags
        do {
            try systemCall("TUNSETIFF", device: name) { ts_ioctl_ptr(fd, TS_TUNSETIFF, &request) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }
}

/// Reads a short text file (sysfs/procfs attribute), trimmed of the trailing newline.
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    if count < 0 { return nil }
    var text = String(decoding: buffer.prefix(count), as: UTF8.self)
    while text.last == "\n" || text.last == " " { text.removeLast() }
    return text
}

/// One attached queue of a TAP: the fd QEMU would hold, owned. Closing it detaches (carrier drops), and
/// destroys the TAP if it is not persistent.
///
/// ## Concurrency model
/// Not `Sendable`: confine it to one serial queue (the packet loop's) once it carries frames; before that
/// it may be set up on any one thread.
public final class TunQueue {
    /// The TAP's name.
    public let name: String
    /// The queue's fd (-1 once closed). Read only inside LinuxNet; others use the methods and ``pollHandle``.
    private(set) var fileDescriptor: Int32

    /// Attaches to the TAP `name` as ``TapDevice/attach(name:vnetHeader:nonBlocking:createIfMissing:)`` does.
    public init(attachingTo name: InterfaceName, vnetHeader: Bool, nonBlocking: Bool, createIfMissing: Bool = false) throws {
        fileDescriptor = try TapDevice.attach(name: name, vnetHeader: vnetHeader, nonBlocking: nonBlocking,
                                              createIfMissing: createIfMissing)
        self.name = name.value
    }

    /// Takes over `fd`, a queue a previous daemon process handed over (``SocketHandOver``), after
    /// checking with `TUNGETIFF` that it is still attached to the TAP `name`. Closes `fd` if not.
    public init(adopting fd: Int32, name: String) throws(SystemError) {
        var request = ts_ifreq()
        let result = ts_ioctl_ptr(fd, TS_TUNGETIFF, &request)
        let code = errno
        let attached = withUnsafeBytes(of: &request.name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        guard result == 0, attached == name else {
            _ = Glibc.close(fd)
            throw SystemError(operation: "TUNGETIFF", device: name, errno: result == 0 ? ENODEV : code,
                              detail: result == 0 ? "the handed-over queue belongs to \(attached)" : nil)
        }
        fileDescriptor = fd
        self.name = name
    }

    deinit { close() }

    /// Gives a duplicate of the queue to `handOver` under `key`, for the next daemon process
    /// (``SocketHandOver/keep(_:name:)``): the TAP, which lives as long as a queue is attached,
    /// outlives this process.
    public func keep(in handOver: SocketHandOver, as key: String) {
        guard fileDescriptor >= 0 else { return }
        handOver.keep(fileDescriptor, name: key)
    }

    /// Detaches. Idempotent.
    public func close() {
        guard fileDescriptor >= 0 else { return }
        _ = Glibc.close(fileDescriptor)
        fileDescriptor = -1
    }

    /// `TUNSETPERSIST`: whether the TAP outlives its last attached fd.
    public func setPersistent(_ persistent: Bool) throws(SystemError) {
        try systemCall("TUNSETPERSIST \(persistent ? 1 : 0)", device: name) {
            ts_ioctl_ulong(fileDescriptor, TS_TUNSETPERSIST, persistent ? 1 : 0)
        }
    }

    /// `TUNSETOFFLOAD` for this reader (see ``TapDevice/setOffload(fd:csum:tso4:tso6:)``).
    public func setOffload(csum: Bool, tso4: Bool, tso6: Bool) throws {
        do { try TapDevice.setOffload(fd: fileDescriptor, csum: csum, tso4: tso4, tso6: tso6) } catch let error as SystemError {
            var named = error
            named.device = name
            throw named
        }
    }

    /// What an ``EventPoll`` watches (readable: frames from the kernel side).
    public var pollHandle: PollHandle { PollHandle(descriptor: fileDescriptor) }
}
