import CTapShim
import Locking

#if canImport(Glibc)
import Glibc
#endif

/// Keeps the receive sockets of the switch's ports alive across a daemon restart, so frames a VM
/// sends while no daemon runs wait in the socket's receive ring and are forwarded afterwards.
///
/// Two ways across a restart, both ending in the same adoption on start:
/// - **systemd's file-descriptor store**: each socket is given to systemd when its port opens
///   (`FDSTORE=1`, `FDNAME=KIND.IFINDEX.IFNAME`, one datagram to `$NOTIFY_SOCKET` with the fd attached) and
///   taken back out when the port goes (`FDSTOREREMOVE=1`). After any restart, planned or a crash,
///   systemd passes them back (`$LISTEN_FDS`, `$LISTEN_FDNAMES`). Enabled when `$NOTIFY_SOCKET` is set and
///   the unit has a store (`$FDSTORE` > 0, systemd ≥ 254, or `$TAPSWITCH_FDSTORE=1` set by the unit).
/// - **re-exec** (``execSelf(arguments:)``, a planned restart without systemd): the process keeps a
///   duplicate of each socket (``keep(_:name:)``), clears close-on-exec on them and executes its own
///   binary again; `$TAPSWITCH_HANDOVER_FDS` names them (`FD=NAME ...`) for the same process id.
///
/// A socket is adopted by name (``adopt(name:)``), which carries the interface index, so a TAP
/// deleted and recreated under the same name is not mistaken for the old one.
///
/// ## Concurrency model
/// `Sendable`; one `Locked` (a pthread mutex TSan can see) guards the inherited and kept descriptors. Called from control tasks
/// when ports open, from the packet-loop queue when they close, and from the daemon at start and
/// restart; never on the frame path.
public final class SocketHandOver: Sendable {
    /// The process's one registry: descriptors are a process-wide resource.
    public static let process = SocketHandOver()

    /// The environment variable of the re-exec path.
    public static let environmentKey = "TAPSWITCH_HANDOVER_FDS"
    static let pidKey = "TAPSWITCH_HANDOVER_PID"

    private struct State {
        /// Descriptors received from the previous run, by name, not adopted yet.
        var inherited: [String: Int32] = [:]
        /// Our duplicates of the open ports' receive sockets, by name (only while ``enabled``).
        var kept: [String: Int32] = [:]
        var enabled = false
        /// After ``freeze()``: closing ports keep their sockets (the daemon is stopping or restarting).
        var frozen = false
        var notifySocket: String?
        /// Where the inherited descriptors came from: "re-exec", "systemd", or "" (none).
        var source = ""
    }
    private let state = Locked(State())

    init() {}

    /// The name of one of a port's sockets: its kind (`rx`, `tx`, ...), the interface index and name
    /// (fd names may not hold ':').
    public static func socketName(_ kind: String, index: Int32, device: String) -> String { "\(kind).\(index).\(device)" }

    /// Whether a socket called `name` waits to be adopted.
    public func hasInherited(_ name: String) -> Bool { state.withLock { $0.inherited[name] != nil } }

    /// Offers `fd` (now owned by the registry) for adoption under `name`, as if inherited; closes it
    /// if one of that name is waiting already.
    public func offer(_ fd: Int32, name: String) {
        let duplicate = state.withLock { s -> Bool in
            if s.inherited[name] != nil { return true }
            s.inherited[name] = fd
            return false
        }
        if duplicate { _ = Glibc.close(fd) }
    }

    /// Takes the descriptors passed by systemd or by the previous process image, sets
    /// close-on-exec on them and removes the variables from the environment (so no child sees
    /// them). Call once, early, before any other thread starts (it changes the environment).
    /// - Returns: the names of the descriptors taken.
    @discardableResult
    public func takeInherited() -> [String] {
        let env = ProcessInfoLite.environment
        var found: [(Int32, String)] = []
        let pid = getpid()
        if let list = env[Self.environmentKey], env[Self.pidKey].flatMap(Int32.init) == pid {
            for item in list.split(separator: " ") {
                let parts = item.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let fd = Int32(parts[0]), fd > 2 { found.append((fd, String(parts[1]))) }
            }
        }
        if let countText = env["LISTEN_FDS"], let count = Int32(countText), count > 0,
           env["LISTEN_PID"].flatMap(Int32.init) == pid {
            let names = (env["LISTEN_FDNAMES"] ?? "").split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            for i in 0..<count {
                let name = Int(i) < names.count ? names[Int(i)] : "unknown"
                found.append((3 + i, name))
            }
        }
        for key in [Self.environmentKey, Self.pidKey, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(key) }
        var taken: [String] = []
        let viaExec = env[Self.environmentKey] != nil && env[Self.pidKey].flatMap(Int32.init) == pid
        state.withLock { s in
            if !found.isEmpty { s.source = viaExec ? "re-exec" : "systemd" }
            for (fd, name) in found {
                guard fcntl(fd, F_GETFD) >= 0 else { continue }  // not open after all
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                if let old = s.inherited[name] {
                    // The same socket twice (the store and the re-exec): keep one.
                    if old != fd { _ = Glibc.close(fd) }
                    continue
                }
                s.inherited[name] = fd
                taken.append(name)
            }
        }
        return taken.sorted()
    }

    /// Starts keeping the sockets of ports opened from now on (the daemon; tests of the data plane
    /// leave it off). `environment` decides whether systemd's store is used.
    public func enable(environment: [String: String]) {
        let notify = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        let store = (environment["FDSTORE"].flatMap(Int.init) ?? 0) > 0 || environment["TAPSWITCH_FDSTORE"] == "1"
        state.withLock {
            $0.enabled = true
            $0.notifySocket = store ? notify : nil
        }
    }

    /// Where the inherited sockets came from: "re-exec", "systemd", or "" when none were.
    public var inheritedSource: String { state.withLock { $0.source } }

    /// Whether ``enable(environment:)`` was called (this process is the daemon).
    public var isEnabled: Bool { state.withLock { $0.enabled } }

    /// Whether sockets go to systemd's store.
    public var usesSystemdStore: Bool { state.withLock { $0.notifySocket != nil } }

    /// The inherited socket called `name`, now owned by the caller; nil if there is none.
    public func adopt(name: String) -> Int32? {
        state.withLock { $0.inherited.removeValue(forKey: name) }
    }

    /// Names of the inherited sockets not adopted yet.
    public var unadopted: [String] { state.withLock { $0.inherited.keys.sorted() } }

    /// Closes the inherited sockets nobody adopted (their ports are gone) and removes them from
    /// systemd's store. Returns their names.
    @discardableResult
    public func closeUnadopted() -> [String] {
        let (left, notify) = state.withLock { s -> ([String: Int32], String?) in
            let left = s.inherited
            s.inherited = [:]
            return (left, s.notifySocket)
        }
        for (name, fd) in left {
            _ = Glibc.close(fd)
            if let notify { _ = Self.notify("FDSTOREREMOVE=1\nFDNAME=\(name)", fd: nil, to: notify) }
        }
        return left.keys.sorted()
    }

    /// Keeps a duplicate of the open receive socket `fd` under `name` (and gives it to systemd's
    /// store), so a restart can take it over. No-op unless ``enable(environment:)`` was called.
    public func keep(_ fd: Int32, name: String) {
        let notify: String? = state.withLock { s in
            guard s.enabled else { return nil }
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, 3)
            guard copy >= 0 else { return nil }
            if let old = s.kept.updateValue(copy, forKey: name) { _ = Glibc.close(old) }
            return s.notifySocket
        }
        if let notify { _ = Self.notify("FDSTORE=1\nFDNAME=\(name)", fd: fd, to: notify) }
    }

    /// The port of `name` closed: forget its socket (and take it out of systemd's store), unless
    /// the daemon is stopping (``freeze()``).
    public func release(name: String) {
        let notify: String?? = state.withLock { s in
            guard s.enabled, !s.frozen else { return nil }
            if let fd = s.kept.removeValue(forKey: name) { _ = Glibc.close(fd) }
            return .some(s.notifySocket)
        }
        if case .some(.some(let path)) = notify { _ = Self.notify("FDSTOREREMOVE=1\nFDNAME=\(name)", fd: nil, to: path) }
    }

    /// From now on closing ports keeps their sockets: the daemon is stopping or restarting.
    public func freeze() { state.withLock { $0.frozen = true } }

    /// Names of the sockets kept for the next run.
    public var keptNames: [String] { state.withLock { $0.kept.keys.sorted() } }

    /// Executes this process's binary again with `arguments` (argv, program name first), passing
    /// the kept sockets (``keep(_:name:)``) and unblocking every signal. Returns only on failure.
    public func execSelf(arguments: [String]) -> SystemError {
        let kept = state.withLock { $0.kept }
        var list: [String] = []
        for (name, fd) in kept.sorted(by: { $0.key < $1.key }) {
            // Not close-on-exec: these (and only these) cross into the new image.
            _ = fcntl(fd, F_SETFD, 0)
            list.append("\(fd)=\(name)")
        }
        setenv(Self.environmentKey, list.joined(separator: " "), 1)
        setenv(Self.pidKey, "\(getpid())", 1)
        // The new image starts with this thread's signal mask (cleared here) and with ignored
        // signals still ignored: SIGTERM/SIGINT stop it as they would a fresh process, while a
        // SIGHUP or SIGUSR2 arriving before it watches them again is dropped rather than fatal.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        for sig in [SIGTERM, SIGINT] { signal(sig, SIG_DFL) }
        for sig in [SIGHUP, SIGUSR2] { signal(sig, SIG_IGN) }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        execv("/proc/self/exe", &argv)
        let code = errno
        for p in argv { free(p) }
        for (_, fd) in kept { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return SystemError(operation: "execv(/proc/self/exe)", errno: code)
    }

    /// One sd_notify datagram, with `fd` attached (`SCM_RIGHTS`) when given. Returns errno, 0 on success.
    static func notify(_ message: String, fd: Int32?, to path: String) -> Int32 {
        let sock = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { return errno }
        defer { _ = Glibc.close(sock) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let addrLength = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        var payload = Array(message.utf8)
        // cmsghdr (16 bytes on 64-bit) + one int, padded to 8: CMSG_SPACE(4) = 24, CMSG_LEN(4) = 20.
        let headerSize = MemoryLayout<cmsghdr>.size
        var control = [UInt8](repeating: 0, count: headerSize + 8)
        let result: Int = payload.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { cbuf in
                withUnsafeMutablePointer(to: &addr) { ap in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    return withUnsafeMutablePointer(to: &iov) { iovp in
                        var msg = msghdr()
                        msg.msg_name = UnsafeMutableRawPointer(ap)
                        msg.msg_namelen = addrLength
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        if let fd {
                            let h = cbuf.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                            h.pointee.cmsg_len = headerSize + MemoryLayout<Int32>.size
                            h.pointee.cmsg_level = SOL_SOCKET
                            h.pointee.cmsg_type = Int32(SCM_RIGHTS)
                            cbuf.storeBytes(of: fd, toByteOffset: headerSize, as: Int32.self)
                            msg.msg_control = cbuf.baseAddress
                            msg.msg_controllen = cbuf.count
                        }
                        return sendmsg(sock, &msg, Int32(MSG_NOSIGNAL))
                    }
                }
            }
        }
        return result < 0 ? errno : 0
    }
}

/// The process environment read through libc (LinuxNet does not import Foundation).
enum ProcessInfoLite {
    static var environment: [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            p += 1
        }
        return result
    }
}
