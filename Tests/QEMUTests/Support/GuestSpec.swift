import Foundation

/// What the guest's `/init` does once its interface is up (`tsw.role`, see `scripts/guest/init`).
enum GuestRole: Sendable, Equatable {
    /// Answer pings until killed (or `lifetime` expires, default 600 s).
    case idle
    /// Wait for each peer's first reply (`GuestSpec.peerWait`), then ping it `count` times; prints
    /// `TSW-RESULT ping ok|fail sent=S received=R peer=IP` per peer. `ok` needs all `count` replies.
    case ping(peers: [String], count: Int = 5)
    /// Expect NO reply from each peer within `GuestSpec.peerWait` seconds (default 5; isolation tests);
    /// prints `TSW-RESULT noping ok|fail peer=IP`.
    case noPing(peers: [String], count: Int = 3)
    /// `iperf3 -s -1`, limited to `limit` seconds; prints `TSW-RESULT iperf-server ok|fail`.
    case iperfServer(limit: Int = 60)
    /// Wait for the server to answer ping, then `iperf3 -c` for `seconds` (retrying while the
    /// server is not listening yet); prints `TSW-RESULT tcp ok BITS_PER_SECOND` or `tcp fail ...`.
    case iperfClient(server: String, seconds: Int = 3, reverse: Bool = false)
}

/// One guest: its TAP, MAC, address and role. Everything but `tap`, `ip` and `role` has a default.
struct GuestSpec: Sendable {
    /// Short name used in log file names and error messages.
    var name: String
    /// The host TAP QEMU attaches to (`-netdev tap,ifname=...`); must exist and be unattached.
    var tap: String
    /// The guest NIC's MAC (`-device virtio-net-pci,mac=...`).
    var mac: String
    /// Address with prefix length, e.g. `10.99.0.1/24` (keep test guests in 10.99.x.x).
    var ip: String
    var role: GuestRole
    /// 0: untagged on eth0; 1...4094: the address sits on the 802.1Q sub-interface eth0.VLAN.
    var vlan: Int = 0
    /// Further 802.1Q sub-interfaces eth0.VLAN, each with its own address (`tsw.vlans`): a trunk
    /// guest. With these, `ip` may be empty (no address on eth0 / eth0.`vlan`).
    var vlans: [VLANInterface] = []
    /// After the role, stay up answering pings instead of powering off (`tsw.linger=1`), so a
    /// guest can both probe and be probed.
    var linger: Bool = false
    /// Seconds a `ping`/`iperfClient` role waits for the peer's first reply (`tsw.wait`, default 30),
    /// or a `noPing` role waits for silence (default 5).
    var peerWait: Int? = nil
    /// Seconds after which the guest powers itself off whatever happens (`tsw.lifetime`);
    /// nil: the init's default (120 s, idle 600 s); 0: never.
    var lifetime: Int? = nil
    /// Guest MTU on eth0 (and the VLAN sub-interface).
    var mtu: Int? = nil
    /// Virtio-net offloads (TSO/GSO, partial checksums) as QEMU negotiates them by default.
    /// `false` turns every checksum and segmentation offload off on the device.
    var offloads: Bool = true
    var memoryMiB: Int = 256
    /// Run QEMU inside this network namespace (`ip netns exec NS qemu-system-x86_64 ...`), where the
    /// TAP is: a guest on a "host" of a multi-host test. nil: the test's own namespace.
    var netns: String? = nil
    /// Extra kernel command-line words, appended verbatim.
    var extraKernelArguments: [String] = []

    init(name: String, tap: String, mac: String = GuestSpec.randomMAC(), ip: String, role: GuestRole) {
        self.name = name
        self.tap = tap
        self.mac = mac
        self.ip = ip
        self.role = role
    }

    /// A random locally administered unicast MAC in QEMU's customary 52:54:00 block.
    static func randomMAC() -> String {
        let tail = (0..<3).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }
        return "52:54:00:" + tail.joined(separator: ":")
    }

    /// The `tsw.*` words for the guest's `/init` (the contract is documented at the top of `scripts/guest/init`).
    var initArguments: [String] {
        var args = ip.isEmpty ? ["tsw.vlan=\(vlan)"] : ["tsw.ip=\(ip)", "tsw.vlan=\(vlan)"]
        if !vlans.isEmpty { args.append("tsw.vlans=" + vlans.map { "\($0.vlan):\($0.ip)" }.joined(separator: ",")) }
        if linger { args.append("tsw.linger=1") }
        switch role {
        case .idle:
            args.append("tsw.role=idle")
        case .ping(let peers, let count):
            args += ["tsw.role=ping", "tsw.peer=\(peers.joined(separator: ","))", "tsw.count=\(count)"]
        case .noPing(let peers, let count):
            args += ["tsw.role=noping", "tsw.peer=\(peers.joined(separator: ","))", "tsw.count=\(count)"]
        case .iperfServer(let limit):
            args += ["tsw.role=iperf-server", "tsw.limit=\(limit)"]
        case .iperfClient(let server, let seconds, let reverse):
            args += ["tsw.role=iperf-client", "tsw.peer=\(server)", "tsw.time=\(seconds)"]
            if reverse { args.append("tsw.reverse=1") }
        }
        if let peerWait { args.append("tsw.wait=\(peerWait)") }
        if let lifetime { args.append("tsw.lifetime=\(lifetime)") }
        if let mtu { args.append("tsw.mtu=\(mtu)") }
        return args
    }

    /// The whole kernel command line: serial console, quiet boot, QEMU exits on panic, then `tsw.*`.
    var kernelCommandLine: String {
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its
        // ticks and panic ("IO-APIC + timer doesn't work"), e.g. while `swift test` runs suites in parallel.
        (["console=ttyS0", "quiet", "loglevel=3", "panic=-1", "no_timer_check"] + initArguments + extraKernelArguments)
            .joined(separator: " ")
    }

    /// Checks what QEMU or the guest would otherwise reject much later and less clearly.
    func validate() throws {
        func bad(_ field: String, _ value: String, _ why: String) -> QEMUGuestError {
            .invalidSpec(guest: name, field: field, value: value, reason: why)
        }
        if tap.isEmpty || tap.utf8.count > 15 || tap.contains(where: { $0 == "/" || $0 == "," || $0.isWhitespace }) {
            throw bad("tap", tap, "must be 1-15 characters without '/', ',' or spaces")
        }
        let macBytes = mac.split(separator: ":", omittingEmptySubsequences: false)
        if macBytes.count != 6 || macBytes.contains(where: { $0.count != 2 || UInt8($0, radix: 16) == nil }) {
            throw bad("mac", mac, "must look like 52:54:00:12:34:56")
        }
        if let first = macBytes.first.flatMap({ UInt8($0, radix: 16) }), first & 1 == 1 {
            throw bad("mac", mac, "is a multicast address")
        }
        if !(ip.isEmpty && !vlans.isEmpty) && (!ip.contains("/") || ip.contains(where: \.isWhitespace)) {
            throw bad("ip", ip, "needs a prefix length, e.g. 10.99.0.1/24")
        }
        if !(0...4094).contains(vlan) { throw bad("vlan", String(vlan), "must be 0...4094") }
        var seen: Set<Int> = vlan == 0 ? [] : [vlan]
        for sub in vlans {
            if !(1...4094).contains(sub.vlan) { throw bad("vlans", String(sub.vlan), "must be 1...4094") }
            if !seen.insert(sub.vlan).inserted { throw bad("vlans", String(sub.vlan), "appears twice (or is also vlan)") }
            if !sub.ip.contains("/") || sub.ip.contains(where: { $0.isWhitespace || $0 == "," || $0 == ":" }) {
                throw bad("vlans", sub.ip, "needs an IPv4 address with a prefix length, e.g. 10.99.10.1/24")
            }
        }
        let words = initArguments + extraKernelArguments
        if let spaced = words.first(where: { $0.contains(where: \.isWhitespace) }) {
            throw bad("kernel arguments", spaced, "contains whitespace")
        }
    }
}

/// One 802.1Q sub-interface `eth0.VLAN` of a guest with its address (`tsw.vlans`).
struct VLANInterface: Sendable, Equatable {
    var vlan: Int
    var ip: String
}
