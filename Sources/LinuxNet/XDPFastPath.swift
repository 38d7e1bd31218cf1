#if canImport(Glibc)
import Glibc
#endif
import CLibBPF

/// tapswitch's XDP program (`bpf/tapswitch-fastpath.bpf.c`, compiled by `scripts/build-bpf`) loaded
/// through libbpf, with its maps: `flows` (the cached decisions), `ports` (a devmap of TAP
/// ifindexes by the switch's port index; `port_ifindex` the same for the skb path) and `counters`
/// (per-CPU frames and bytes per port index). The same object holds the skb path: a tcx ingress
/// program for the frames native XDP passes up (partial checksums, TCP superframes) and the
/// receive socket filter that hides them from the slow path (through the program array `rx_hide`).
///
/// Nothing is pinned: the programs and maps live as long as this object's fds, and every
/// attachment is a BPF link (``XDPLink``, ``TCXLink``), which the kernel removes when its fd
/// closes, so a daemon that stops or crashes leaves no BPF object behind; a socket filter left on a
/// kept socket hides nothing once `rx_hide` has no user-space holder.
///
/// ## Concurrency model
/// Not `Sendable`: created, used and closed on one queue (the packet loop's).
public final class XDPFastPath {
    /// The file names searched for the compiled object.
    public static let objectName = "tapswitch-fastpath.bpf.o"

    private var object: OpaquePointer?
    private let program: OpaquePointer
    private let flowsFD: Int32
    private let portsFD: Int32
    private let countersFD: Int32
    /// `tapswitch_fastpath_skb` (tcx ingress) and `tapswitch_rx_filter` (receive socket filter).
    private let skbProgramFD: Int32
    private let receiveFilterFD: Int32
    /// `port_ifindex`: the devmap's contents for the skb path (a devmap is for XDP programs only).
    private let portIfindexFD: Int32
    private let cpus: Int
    private var counterBuffer: [PortCounterValue]
    public let maxPorts: Int
    public let maxFlows: Int

    /// One flow entry's key, laid out as `struct flow_key` in the program.
    public struct FlowKey {
        public var ifindex: UInt32
        public var tag: UInt16
        public var dst: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
        public var src: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
        public var pad: UInt16 = 0

        public init(ifindex: UInt32, tag: UInt16, dst: UInt64, src: UInt64) {
            self.ifindex = ifindex
            self.tag = tag
            self.dst = Self.bytes(dst)
            self.src = Self.bytes(src)
        }

        static func bytes(_ v: UInt64) -> (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
            (UInt8(truncatingIfNeeded: v >> 40), UInt8(truncatingIfNeeded: v >> 32), UInt8(truncatingIfNeeded: v >> 24),
             UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v))
        }
    }

    /// `struct flow_value`.
    struct FlowValue {
        var egress: UInt32
        var ingress: UInt32
        var lastUse: UInt64
        var vlan: UInt32 = 0
        var checks: UInt32 = 0
    }

    /// What an entry does to the frame's 802.1Q tag (`flow_value.vlan`).
    public enum TagAction: Equatable, Sendable {
        case keep
        /// Inserts a tag with this VID (priority 0).
        case push(UInt16)
        case pop

        var encoded: UInt32 {
            switch self {
            case .keep: 0
            case .push(let vid): 0x10000 | UInt32(vid & 0x0FFF)
            case .pop: 0x20000
            }
        }
    }

    /// `struct port_counters`.
    public struct PortCounterValue: Equatable {
        public var framesIn: UInt64 = 0
        public var bytesIn: UInt64 = 0
        public var framesOut: UInt64 = 0
        public var bytesOut: UInt64 = 0
    }

    /// Where the compiled object is looked for, first found wins: `$TAPSWITCH_BPF_OBJECT`, next to
    /// the running executable (`scripts/build-bpf` puts it in SwiftPM's build directories), then
    /// `../lib/tapswitch/` from it (`scripts/install`), then /usr/lib/tapswitch (the package).
    public static func findObject() -> String? {
        var candidates: [String] = []
        if let env = getenv("TAPSWITCH_BPF_OBJECT") { candidates.append(String(cString: env)) }
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        if n > 0 {
            let exe = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let slash = exe.lastIndex(of: "/") {
                let dir = String(exe[..<slash])
                candidates += ["\(dir)/\(objectName)", "\(dir)/../lib/tapswitch/\(objectName)"]
            }
        }
        candidates += ["/usr/local/lib/tapswitch/\(objectName)", "/usr/lib/tapswitch/\(objectName)"]
        return candidates.first { access($0, R_OK) == 0 }
    }

    /// Opens and loads the object at `path` with maps sized for `maxPorts` ports and `maxFlows`
    /// entries. Throws with the step that failed (the verifier's refusal, missing privileges).
    public init(objectPath path: String, maxPorts: Int, maxFlows: Int) throws(SystemError) {
        // libbpf prints its diagnostics (the verifier log) to stderr by default: keep quiet; the
        // error carries the errno.
        libbpf_set_print(nil)
        guard let obj = bpf_object__open_file(path, nil) else {
            throw SystemError(operation: "bpf_object__open_file", device: path, errno: errno)
        }
        func fail(_ op: String, _ e: Int32) -> SystemError {
            bpf_object__close(obj)
            return SystemError(operation: op, device: path, errno: e)
        }
        for (name, size) in [("flows", maxFlows), ("ports", maxPorts), ("counters", maxPorts), ("port_ifindex", maxPorts)] {
            guard let map = bpf_object__find_map_by_name(obj, name) else { throw fail("find map \(name)", ENOENT) }
            let r = bpf_map__set_max_entries(map, UInt32(size))
            if r != 0 { throw fail("bpf_map__set_max_entries(\(name))", -r) }
        }
        let r = bpf_object__load(obj)
        if r != 0 { throw fail("bpf_object__load", -r) }
        guard let prog = bpf_object__find_program_by_name(obj, "tapswitch_fastpath") else { throw fail("find program", ENOENT) }
        func fd(_ name: String) -> Int32 { bpf_object__find_map_by_name(obj, name).map { bpf_map__fd($0) } ?? -1 }
        func programFD(_ name: String) -> Int32 { bpf_object__find_program_by_name(obj, name).map { bpf_program__fd($0) } ?? -1 }
        let flows = fd("flows"), ports = fd("ports"), counters = fd("counters"), portIfindex = fd("port_ifindex")
        guard flows >= 0, ports >= 0, counters >= 0, portIfindex >= 0 else { throw fail("map fds", EBADF) }
        // The skb path's programs (tcx ingress and the receive socket's filter); the filter reaches its
        // decision through `rx_hide`, filled here.
        let skb = programFD("tapswitch_fastpath_skb"), filter = programFD("tapswitch_rx_filter")
        let hide = programFD("tapswitch_rx_hide"), hideMap = fd("rx_hide")
        guard skb >= 0, filter >= 0, hide >= 0, hideMap >= 0 else { throw fail("skb path programs", ENOENT) }
        var slot: UInt32 = 0, hideFD = hide
        if bpf_map_update_elem(hideMap, &slot, &hideFD, UInt64(BPF_ANY)) != 0 { throw fail("rx_hide update", errno) }
        skbProgramFD = skb
        portIfindexFD = portIfindex
        receiveFilterFD = filter
        object = obj
        program = prog
        flowsFD = flows
        portsFD = ports
        countersFD = counters
        cpus = max(1, Int(libbpf_num_possible_cpus()))
        counterBuffer = Array(repeating: PortCounterValue(), count: cpus)
        self.maxPorts = maxPorts
        self.maxFlows = maxFlows
    }

    deinit { close() }

    /// Closes the program and its maps (links hold their own references until they close).
    public func close() {
        if let object { bpf_object__close(object) }
        object = nil
    }

    /// Attaches the program to the device `ifindex` (named `name` in errors) through a BPF link;
    /// the kernel picks native XDP where the driver has it (TUN does).
    public func attach(ifindex: Int32, name: String) throws(SystemError) -> XDPLink {
        guard let link = bpf_program__attach_xdp(program, ifindex) else {
            throw SystemError(operation: "attach XDP", device: name, errno: errno)
        }
        return XDPLink(link: link)
    }

    /// Attaches the skb path (`tapswitch_fastpath_skb`) to the device's tcx ingress through a BPF
    /// link: it forwards the frames the XDP program passed up (partial checksums, TCP superframes)
    /// that have an entry, keeping their checksum and GSO state. Attach it before the receive
    /// socket's filter (``hideSkbPathFrames(from:)``), which hides exactly those frames.
    public func attachSkbPath(ifindex: Int32, name: String) throws(SystemError) -> TCXLink {
        // BPF_TCX_INGRESS (uapi 6.6); Debian 12's headers predate it and libbpf 1.1 has no
        // tcx helper, so the link is created directly.
        let tcxIngress = bpf_attach_type(rawValue: 46)
        let fd = bpf_link_create(skbProgramFD, ifindex, tcxIngress, nil)
        if fd < 0 { throw SystemError(operation: "attach tcx ingress", device: name, errno: -fd) }
        return TCXLink(fd: fd)
    }

    /// Puts the skb path's filter on `socket` (the switch's receive socket on a VM TAP, replacing
    /// its classic filter, whose UDP superframe rule it repeats): frames the skb path forwards do
    /// not reach the slow path too. While no daemon holds this fast path's maps the filter hides
    /// nothing. Undo with ``PacketSocket/limitUDPFrames(to:)``.
    public func hideSkbPathFrames(from socket: PacketSocket) throws(SystemError) {
        var fd = receiveFilterFD
        _ = try systemCall("setsockopt(SO_ATTACH_BPF)", device: socket.interfaceName) {
            setsockopt(socket.fileDescriptor, SOL_SOCKET, SO_ATTACH_BPF, &fd, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Makes port index `index` deliver to device `ifindex`, with its counters at zero.
    public func setPort(_ index: Int, ifindex: Int32) throws(SystemError) {
        var key = UInt32(index), value = UInt32(bitPattern: ifindex)
        if bpf_map_update_elem(portsFD, &key, &value, UInt64(BPF_ANY)) != 0 {
            throw SystemError(operation: "devmap update", device: "port index \(index)", errno: errno)
        }
        if bpf_map_update_elem(portIfindexFD, &key, &value, UInt64(BPF_ANY)) != 0 {
            throw SystemError(operation: "port_ifindex update", device: "port index \(index)", errno: errno)
        }
        resetCounters(index)
    }

    /// Forgets port index `index`'s device.
    public func clearPort(_ index: Int) {
        var key = UInt32(index), none: UInt32 = 0
        _ = bpf_map_delete_elem(portsFD, &key)
        _ = bpf_map_update_elem(portIfindexFD, &key, &none, UInt64(BPF_ANY))  // an array's slots cannot be deleted
    }

    public func resetCounters(_ index: Int) {
        var key = UInt32(index)
        for i in counterBuffer.indices { counterBuffer[i] = PortCounterValue() }
        _ = counterBuffer.withUnsafeMutableBytes { bpf_map_update_elem(countersFD, &key, $0.baseAddress, UInt64(BPF_ANY)) }
    }

    /// Adds or replaces a flow entry. False when the map refused it (full).
    /// `checks`: `flow_value.checks` (CHECK_DHCP_SERVER 1, CHECK_ROUTER 2): frames they match take the slow path.
    public func insert(_ key: FlowKey, egress: Int, ingress: Int, tag: TagAction = .keep, checks: UInt32 = 0) -> Bool {
        var k = key
        var v = FlowValue(egress: UInt32(egress), ingress: UInt32(ingress), lastUse: 0, vlan: tag.encoded, checks: checks)
        return bpf_map_update_elem(flowsFD, &k, &v, UInt64(BPF_ANY)) == 0
    }

    /// Removes a flow entry; no frame takes it once this returns.
    public func delete(_ key: FlowKey) {
        var k = key
        _ = bpf_map_delete_elem(flowsFD, &k)
    }

    /// The entry's last-use stamp, nil when it is not in the map.
    public func lastUse(_ key: FlowKey) -> UInt64? {
        var k = key
        var v = FlowValue(egress: 0, ingress: 0, lastUse: 0)
        return bpf_map_lookup_elem(flowsFD, &k, &v) == 0 ? v.lastUse : nil
    }

    /// Number of entries in the flow map (walks it: tests and diagnostics).
    public func flowCount() -> Int {
        var n = 0
        var key = FlowKey(ifindex: 0, tag: 0, dst: 0, src: 0)
        var next = key
        var first = true
        while true {
            let r = first ? bpf_map_get_next_key(flowsFD, nil, &next) : bpf_map_get_next_key(flowsFD, &key, &next)
            if r != 0 { return n }
            first = false
            n += 1
            key = next
        }
    }

    /// Port index `index`'s counters summed over CPUs.
    public func counters(_ index: Int) -> PortCounterValue {
        var key = UInt32(index)
        let r = counterBuffer.withUnsafeMutableBytes { bpf_map_lookup_elem(countersFD, &key, $0.baseAddress) }
        guard r == 0 else { return PortCounterValue() }
        var sum = PortCounterValue()
        for c in counterBuffer {
            sum.framesIn &+= c.framesIn; sum.bytesIn &+= c.bytesIn
            sum.framesOut &+= c.framesOut; sum.bytesOut &+= c.bytesOut
        }
        return sum
    }
}

/// One attachment of the fast path to a device: detached when closed or dropped (or when the
/// process exits: the kernel owns nothing past the link's fd).
///
/// ## Concurrency model
/// Not `Sendable`: owned by the port that holds it, on the packet-loop queue.
public final class XDPLink {
    private var link: OpaquePointer?

    init(link: OpaquePointer) { self.link = link }

    deinit { close() }

    public func close() {
        if let link { _ = bpf_link__destroy(link) }
        link = nil
    }

    /// The attach mode the kernel chose for `ifindex`, as `ip link` names it: "xdp" (native),
    /// "xdpgeneric", or nil when no program is attached.
    public static func mode(ifindex: Int32) -> String? {
        var info = bpf_xdp_query_opts()
        info.sz = MemoryLayout<bpf_xdp_query_opts>.size
        guard bpf_xdp_query(ifindex, 0, &info) == 0 else { return nil }
        // XDP_ATTACHED_DRV, _SKB, _HW, _MULTI (linux/if_link.h)
        switch info.attach_mode {
        case 1: return "xdp"
        case 2: return "xdpgeneric"
        case 3: return "xdpoffload"
        case 4: return "multi"
        default: return nil
        }
    }
}

/// The skb path's attachment to a device's tcx ingress (``XDPFastPath/attachSkbPath(ifindex:name:)``):
/// a BPF link fd, detached when closed or dropped, or when the process exits.
///
/// ## Concurrency model
/// Not `Sendable`: owned by the port that holds it, on the packet-loop queue.
public final class TCXLink {
    private var fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close() }

    public func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    /// How many programs the device `ifindex`'s tcx ingress runs (0 with none; nil when the kernel
    /// cannot say): tests and diagnostics.
    public static func ingressPrograms(ifindex: Int32) -> Int? {
        var count: UInt32 = 0, flags: UInt32 = 0
        guard bpf_prog_query(ifindex, bpf_attach_type(rawValue: 46), 0, &flags, nil, &count) == 0 else { return nil }
        return Int(count)
    }
}
