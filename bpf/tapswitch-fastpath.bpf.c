// SPDX-License-Identifier: GPL-2.0 OR MIT
// tapswitch's fast path: an XDP program on every VM TAP, a cache of the switch's decisions.
//
// The switch (user space) installs an entry in `flows` only for a unicast frame it has just
// delivered, unchanged, from a learned source to a learned destination, with every extension
// allowing it; it removes entries whenever what they depend on changes. This program repeats
// those decisions: a frame whose (ingress TAP, 802.1Q tag, destination MAC, source MAC) has an
// entry is redirected to the destination TAP through `ports` (a devmap), and counted per port.
// Everything else, and every frame the redirect could damage, returns XDP_PASS and reaches the
// switch's AF_PACKET socket exactly as without this program.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// Must match LinuxNet/XDPFastPath.swift.
struct flow_key {
    __u32 ifindex;
    __u16 tag;        // 0 untagged, 0x1000 | VID tagged (a priority tag is 0x1000)
    __u8 dst[6];
    __u8 src[6];
    __u16 pad;
};

struct flow_value {
    __u32 egress;     // index into `ports` and `counters` (the switch's port index)
    __u32 ingress;    // index into `counters`
    __u64 last_use;   // coarse monotonic ns of the last frame: the switch refreshes the source MAC
    __u32 vlan;       // the egress form, as the switch's conform step makes it: VLAN_KEEP, VLAN_POP,
                      // or VLAN_PUSH | VID (an access port's frame onto a trunk: TCI = VID, priority 0)
    __u32 checks;     // CHECK_*: the ingress port's guards compiled here (frames they match: slow path)
};

#define VLAN_KEEP 0
#define VLAN_PUSH 0x10000
#define VLAN_POP 0x20000

// dhcp-guard: UDP from port 67 (IPv4) or 547 (IPv6). router-guard: ICMPv4 redirects, ICMPv6 router
// advertisements and redirects. Both: any IP frame whose headers, up to what the guard reads, run
// past the packet or the frame (the guards drop those as unreadable).
#define CHECK_DHCP_SERVER 1
#define CHECK_ROUTER 2

struct port_counters {
    __u64 frames_in, bytes_in, frames_out, bytes_out;
};

// Sizes are set by the loader (the switch's maxPorts and flow limit) before loading.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct flow_key);
    __type(value, struct flow_value);
    __uint(max_entries, 16384);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 1024);
} ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __type(key, __u32);
    __type(value, struct port_counters);
    __uint(max_entries, 1024);
} counters SEC(".maps");

struct vlan_hdr {
    __be16 tci;
    __be16 proto;
};

// Longest frame redirected (without a tag): MTU 1500. Superframes (TSO/GSO, which native XDP
// never sees and a generic-XDP redirect drops with -EMSGSIZE) and jumbo frames take the slow path.
#define MAX_FRAME 1514

static __always_inline __u32 fold(__u32 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

// True when the L4 checksum field holds exactly the pseudo-header sum: what a guest with checksum
// offload writes next to VIRTIO_NET_HDR_F_NEEDS_CSUM, a flag native XDP cannot see. A redirect
// would deliver it unfinished, so such a frame goes to the slow path, which keeps the flag. A
// complete checksum equal to that sum by chance (1 in 65536) only costs the slow path.
static __always_inline int equals_pseudo(__u32 sum, __u16 check)
{
    __u16 s = (__u16)fold(sum);
    return check == s || ((__u16)~check == 0 && (__u16)~s == 0) || (check == 0 && s == 0xffff) ||
           (check == 0xffff && s == 0);
}

// Port numbers of UDP tunnels (VXLAN, its Linux default, Geneve): their inner checksum may be
// partial while the outer one is complete.
static __always_inline int is_tunnel(__be16 port)
{
    return port == bpf_htons(4789) || port == bpf_htons(8472) || port == bpf_htons(6081);
}

// 1: the frame may be redirected as it is; 0: slow path.
static __always_inline int l4_complete(__u8 proto, void *l4, void *end, __u32 pseudo)
{
    if (proto == IPPROTO_TCP) {
        struct tcphdr *t = l4;
        if ((void *)(t + 1) > end)
            return 0;
        return !equals_pseudo(pseudo, t->check);
    }
    if (proto == IPPROTO_UDP) {
        struct udphdr *u = l4;
        if ((void *)(u + 1) > end)
            return 0;
        if (is_tunnel(u->dest))
            return 0;
        if (u->check == 0)
            return 1;  // IPv4 without checksum
        return !equals_pseudo(pseudo, u->check);
    }
    return 1;
}

// 1: the guards in `checks` let the frame through untouched, exactly as they would on the slow
// path (SwitchExtensions/PacketFields.swift and the guards); 0: slow path. The caller checked what
// admission checks (the IP header and its announced length fit the frame) and sent IPv4 with
// options and IPv6 with extension headers to the slow path.
static __always_inline int guards_pass(__u32 checks, __be16 proto, void *l3, void *end)
{
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end)
            return 0;
        if (ip->frag_off & bpf_htons(0x1fff))
            return 1;  // no transport header: the guards let it be
        __u32 total = bpf_ntohs(ip->tot_len);
        if ((checks & CHECK_DHCP_SERVER) && ip->protocol == IPPROTO_UDP) {
            struct udphdr *u = (void *)(ip + 1);
            if ((void *)(u + 1) > end || total < sizeof(*ip) + sizeof(*u) || u->source == bpf_htons(67))
                return 0;
        }
        if ((checks & CHECK_ROUTER) && ip->protocol == IPPROTO_ICMP) {
            __u8 *type = (void *)(ip + 1);
            if ((void *)(type + 1) > end || total < sizeof(*ip) + 1 || *type == 5)
                return 0;
        }
        return 1;
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            return 0;
        __u32 payload = bpf_ntohs(ip6->payload_len);
        if ((checks & CHECK_DHCP_SERVER) && ip6->nexthdr == IPPROTO_UDP) {
            struct udphdr *u = (void *)(ip6 + 1);
            if ((void *)(u + 1) > end || payload < sizeof(*u) || u->source == bpf_htons(547))
                return 0;
        }
        if ((checks & CHECK_ROUTER) && ip6->nexthdr == IPPROTO_ICMPV6) {
            __u8 *type = (void *)(ip6 + 1);
            if ((void *)(type + 1) > end || payload < 1 || *type == 134 || *type == 137)
                return 0;
        }
        return 1;
    }
    return 1;  // not IP: the guards do not look
}

SEC("xdp")
int tapswitch_fastpath(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return XDP_PASS;
    if (eth->h_dest[0] & 1)
        return XDP_PASS;  // broadcast and multicast: flooding and learning are the switch's

    struct flow_key key = {};
    key.ifindex = ctx->ingress_ifindex;
    __builtin_memcpy(key.dst, eth->h_dest, 6);
    __builtin_memcpy(key.src, eth->h_source, 6);

    __be16 proto = eth->h_proto;
    void *l3 = eth + 1;
    if (proto == bpf_htons(ETH_P_8021Q)) {
        struct vlan_hdr *v = l3;
        if ((void *)(v + 1) > end)
            return XDP_PASS;
        key.tag = 0x1000 | (bpf_ntohs(v->tci) & 0x0fff);
        proto = v->proto;
        l3 = v + 1;
        if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
            return XDP_PASS;  // stacked tags: the switch refuses or handles them
    } else if (proto == bpf_htons(ETH_P_8021AD)) {
        return XDP_PASS;
    }
    // Compared as pointers with constant offsets: pointer subtraction and some pointer arithmetic
    // need CAP_PERFMON, which the daemon does not keep.
    if (key.tag) {
        if (data + MAX_FRAME + 4 < end)
            return XDP_PASS;
    } else if (data + MAX_FRAME < end) {
        return XDP_PASS;
    }

    // The switch's admission (SwitchCore FrameParser) drops IPv4/IPv6/ARP whose header or announced
    // length does not fit the frame, with a counted reason: such frames take the slow path. The
    // frame's length comes from a helper (pointer subtraction needs CAP_PERFMON).
    __u64 len = bpf_xdp_get_buff_len(ctx);
    __u32 l3off = key.tag ? 18 : 14;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end)
            return XDP_PASS;
        // IP options (rare) would need a variable offset, which the verifier allows only with
        // CAP_PERFMON: such frames take the slow path.
        if (ip->ihl != 5 || ip->version != 4)
            return XDP_PASS;
        __u32 total = bpf_ntohs(ip->tot_len);
        if (total < sizeof(*ip) || l3off + total > len)
            return XDP_PASS;
        __u32 hl = sizeof(*ip);
        // Non-first fragments carry no L4 header (and no partial checksum).
        if ((ip->frag_off & bpf_htons(0x1fff)) == 0) {
            void *l4 = ip + 1;
            __u32 l4len = bpf_ntohs(ip->tot_len) - hl;
            __u32 pseudo = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
                           bpf_htons((__u16)ip->protocol) + bpf_htons((__u16)l4len);
            if (!l4_complete(ip->protocol, l4, end, pseudo))
                return XDP_PASS;
        }
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            return XDP_PASS;
        if (ip6->version != 6 || l3off + sizeof(*ip6) + bpf_ntohs(ip6->payload_len) > len)
            return XDP_PASS;
        __u8 next = ip6->nexthdr;
        if (next == IPPROTO_TCP || next == IPPROTO_UDP) {
            __u32 pseudo = 0;
#pragma unroll
            for (int i = 0; i < 8; i++)
                pseudo += ip6->saddr.in6_u.u6_addr16[i] + ip6->daddr.in6_u.u6_addr16[i];
            pseudo += ip6->payload_len + bpf_htons((__u16)next);
            if (!l4_complete(next, ip6 + 1, end, pseudo))
                return XDP_PASS;
        } else if (next != IPPROTO_ICMPV6 && next != IPPROTO_NONE) {
            return XDP_PASS;  // extension headers: not followed here
        }
    } else if (proto == bpf_htons(ETH_P_ARP)) {
        __u8 *arp = l3;  // htype, ptype, hlen, plen
        if ((void *)(arp + 8) > end)
            return XDP_PASS;
        if (l3off + 8 + 2 * ((__u32)arp[4] + arp[5]) > len)
            return XDP_PASS;
    }

    struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
    if (!v)
        return XDP_PASS;
    if (v->checks && !guards_pass(v->checks, proto, l3, end))
        return XDP_PASS;  // a guard must see it (it is not a use of the entry)
    __u64 now = bpf_ktime_get_coarse_ns();
    if (v->last_use != now)
        v->last_use = now;
    __u32 in = v->ingress, out = v->egress, vlan = v->vlan;
    struct port_counters *c = bpf_map_lookup_elem(&counters, &in);
    if (c) {
        c->frames_in += 1;
        c->bytes_in += len;
    }
    if (vlan & VLAN_PUSH) {
        // [dst src type ...] -> [dst src 8100 TCI type ...]
        if (bpf_xdp_adjust_head(ctx, -4))
            return XDP_PASS;
        data = (void *)(long)ctx->data;
        end = (void *)(long)ctx->data_end;
        if (data + 18 > end)
            return XDP_DROP;  // cannot happen: the frame just grew by 4 bytes
        __builtin_memcpy(data, key.dst, 6);
        __builtin_memcpy(data + 6, key.src, 6);
        __be16 *tag = data + 12;
        tag[0] = bpf_htons(ETH_P_8021Q);
        tag[1] = bpf_htons((__u16)(vlan & 0x0fff));  // the old EtherType follows, untouched
        len += 4;
    } else if (vlan & VLAN_POP) {
        // [dst src 8100 TCI type ...] -> [dst src type ...]: the key holds both addresses.
        if (data + 18 > end)
            return XDP_PASS;
        __builtin_memcpy(data + 4, key.dst, 6);
        __builtin_memcpy(data + 10, key.src, 6);
        if (bpf_xdp_adjust_head(ctx, 4))
            return XDP_DROP;  // the addresses moved already: the frame cannot go back unchanged
        len -= 4;
    }
    c = bpf_map_lookup_elem(&counters, &out);
    if (c) {
        c->frames_out += 1;
        c->bytes_out += len;
    }
    // An empty devmap slot (the port is going away) hands the frame to the switch.
    return bpf_redirect_map(&ports, out, XDP_PASS);
}

// ---- The skb-level fast path: frames the XDP program passed up ----
//
// tun runs the XDP program natively only on small non-GSO writes, and the native program cannot see
// a frame's virtio-net header: a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM, what a guest with
// checksum offload sends) would arrive unfinished after a native redirect, and a TSO superframe
// fails the redirect (-EMSGSIZE). Both return XDP_PASS above and become an skb that keeps the
// header's meaning (CHECKSUM_PARTIAL, gso_size and gso_type). `tapswitch_fastpath_skb`, attached to
// the TAP's tcx ingress through a BPF link, redirects those with an entry in the same `flows` map
// into the destination TAP's transmit path (dev_queue_xmit), exactly where the Linux bridge puts
// them: the destination's virtio-net header says NEEDS_CSUM and GSO again, or, for a reader without
// those offloads, the kernel completes the checksum and segments, as for the bridge.
//
// AF_PACKET taps see an skb before tcx ingress, so the switch's receive socket carries the socket
// filter `tapswitch_rx_filter`, which drops exactly the frames the tc program will redirect (the same
// decision over the same maps). It reaches that decision through the program array `rx_hide`,
// whose entries the kernel clears when the daemon's last fd of it closes (exit, crash, exec): a
// socket that outlives the daemon (kept for a restart) then hides nothing.

// The devmap's contents as plain ifindexes for the skb path: a devmap belongs to XDP programs
// (the kernel refuses other program types that use it). The loader sizes it like `ports`, and
// the switch fills and clears both together.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 1024);
} port_ifindex SEC(".maps");

// A frame the skb path redirects: its entry and the destination's ifindex.
struct skb_target {
    struct flow_value *v;
    __u32 ifindex;
    __u32 len;
};

// The IP protocol of an IPv4/IPv6 frame, or 0. The kernel has taken the outer tag out into the
// skb; a second (inner) tag is still in the frame.
static __always_inline __u8 skb_l4_proto(struct __sk_buff *skb)
{
    __be16 proto;
    __u8 p = 0;
    __u32 l3 = ETH_HLEN;
    if (bpf_skb_load_bytes(skb, 12, &proto, sizeof(proto)) < 0)
        return 0;
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        if (bpf_skb_load_bytes(skb, 16, &proto, sizeof(proto)) < 0)
            return 0;
        l3 += 4;
    }
    if (proto == bpf_htons(ETH_P_IP)) {
        if (bpf_skb_load_bytes(skb, l3 + 9, &p, 1) < 0)
            return 0;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        if (bpf_skb_load_bytes(skb, l3 + 6, &p, 1) < 0)
            return 0;
    }
    return p;
}

// The XDP program's admission and guard checks for an skb (the outer tag is in the skb's metadata,
// so L3 starts at ETH_HLEN and `skb->len` is the frame without it). 1: it may be redirected.
// Admission (SwitchCore FrameParser): IPv4/IPv6/ARP whose header or announced length does not fit
// the frame go to the slow path, which drops and counts them. `checks` (the ingress port's
// compiled guards): as guards_pass, but IPv4 options are followed here, and a guarded port's IPv6
// with extension headers goes to the slow path (the guards walk that chain).
static __always_inline int skb_checks_pass(struct __sk_buff *skb, __be16 proto, __u32 checks)
{
    __u32 avail = skb->len - ETH_HLEN;
    if (skb->len < ETH_HLEN)
        return 0;
    if (proto == bpf_htons(ETH_P_IP)) {
        __u8 ip[20];
        if (avail < sizeof(ip) || bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
            return 0;
        __u32 hl = (ip[0] & 0x0f) * 4, total = (__u32)ip[2] << 8 | ip[3];
        if (ip[0] >> 4 != 4 || hl < 20 || hl > avail || total < hl || total > avail)
            return 0;
        if (!checks || ((ip[6] & 0x1f) | ip[7]))
            return 1;  // no guard, or a non-first fragment (no transport header)
        __u32 l4 = ETH_HLEN + hl, end = ETH_HLEN + total;
        if ((checks & CHECK_DHCP_SERVER) && ip[9] == IPPROTO_UDP) {
            __be16 sport;
            if (l4 + 8 > end || bpf_skb_load_bytes(skb, l4, &sport, sizeof(sport)) < 0 || sport == bpf_htons(67))
                return 0;
        }
        if ((checks & CHECK_ROUTER) && ip[9] == IPPROTO_ICMP) {
            __u8 type;
            if (l4 + 1 > end || bpf_skb_load_bytes(skb, l4, &type, 1) < 0 || type == 5)
                return 0;
        }
        return 1;
    }
    if (proto == bpf_htons(ETH_P_IPV6)) {
        __u8 ip6[8];
        if (avail < 40 || bpf_skb_load_bytes(skb, ETH_HLEN, ip6, sizeof(ip6)) < 0)
            return 0;
        __u32 payload = (__u32)ip6[4] << 8 | ip6[5];
        __u8 next = ip6[6];
        if (ip6[0] >> 4 != 6 || 40 + payload > avail)
            return 0;
        if (!checks)
            return 1;
        if (next == 0 || next == 43 || next == 44 || next == 51 || next == 60)
            return 0;  // extension headers on a guarded port: the guards follow the chain
        __u32 l4 = ETH_HLEN + 40;
        if ((checks & CHECK_DHCP_SERVER) && next == IPPROTO_UDP) {
            __be16 sport;
            if (payload < 8 || bpf_skb_load_bytes(skb, l4, &sport, sizeof(sport)) < 0 || sport == bpf_htons(547))
                return 0;
        }
        if ((checks & CHECK_ROUTER) && next == IPPROTO_ICMPV6) {
            __u8 type;
            if (payload < 1 || bpf_skb_load_bytes(skb, l4, &type, 1) < 0 || type == 134 || type == 137)
                return 0;
        }
        return 1;
    }
    if (proto == bpf_htons(ETH_P_ARP)) {
        __u8 arp[6];
        if (avail < 8 || bpf_skb_load_bytes(skb, ETH_HLEN, arp, sizeof(arp)) < 0)
            return 0;
        return 8 + 2 * ((__u32)arp[4] + arp[5]) <= avail;
    }
    return 1;
}

// The same decision as the XDP program's, for an skb: an entry for (ingress TAP, tag, dst, src)
// and a destination in `ports`. Frames over a full-size frame must be TCP superframes (GSO): UDP
// superframes and jumbo frames keep taking the slow path, as there.
static __always_inline int skb_flow(struct __sk_buff *skb, struct skb_target *t)
{
    struct ethhdr eth;
    if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
        return 0;
    if (eth.h_dest[0] & 1)
        return 0;
    if (eth.h_proto == bpf_htons(ETH_P_8021Q) || eth.h_proto == bpf_htons(ETH_P_8021AD))
        return 0;  // stacked or unstripped tags: the switch's
    struct flow_key key = {};
    key.ifindex = skb->ingress_ifindex;
    __builtin_memcpy(key.dst, eth.h_dest, 6);
    __builtin_memcpy(key.src, eth.h_source, 6);
    __u32 len = skb->len;
    if (skb->vlan_present) {
        if (skb->vlan_proto != bpf_htons(ETH_P_8021Q))
            return 0;
        key.tag = 0x1000 | (skb->vlan_tci & 0x0fff);
        len += 4;
    }
    if (skb->len > MAX_FRAME && (skb->gso_size == 0 || skb_l4_proto(skb) != IPPROTO_TCP))
        return 0;
    struct flow_value *v = bpf_map_lookup_elem(&flows, &key);
    if (!v)
        return 0;
    if (!skb_checks_pass(skb, eth.h_proto, v->checks))
        return 0;
    __u32 out = v->egress;
    __u32 *ifindex = bpf_map_lookup_elem(&port_ifindex, &out);
    if (!ifindex || *ifindex == 0)
        return 0;  // the port is going away: the switch's
    t->v = v;
    t->ifindex = *ifindex;
    t->len = len;
    return 1;
}

SEC("tc")
int tapswitch_fastpath_skb(struct __sk_buff *skb)
{
    struct skb_target t;
    if (!skb_flow(skb, &t))
        return TC_ACT_UNSPEC;  // next tcx program, then the stack (where nothing listens on a VM TAP)
    __u64 now = bpf_ktime_get_coarse_ns();
    if (t.v->last_use != now)
        t.v->last_use = now;
    __u32 in = t.v->ingress, out = t.v->egress;
    struct port_counters *c = bpf_map_lookup_elem(&counters, &in);
    if (c) {
        c->frames_in += 1;
        c->bytes_in += t.len;
    }
    // The egress form, as the XDP program makes it; here the tag lives in the skb's metadata and
    // the destination TAP writes it into the frame (and its virtio-net header's offsets).
    __u32 vlan = t.v->vlan;
    if (vlan & VLAN_PUSH) {
        if (bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), vlan & 0x0fff))
            return TC_ACT_SHOT;  // no memory: the filter has hidden it from the switch already
        t.len += 4;
    } else if (vlan & VLAN_POP) {
        if (bpf_skb_vlan_pop(skb))
            return TC_ACT_SHOT;
        t.len -= 4;
    }
    c = bpf_map_lookup_elem(&counters, &out);
    if (c) {
        c->frames_out += 1;
        c->bytes_out += t.len;
    }
    return bpf_redirect(t.ifindex, 0);
}

struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 1);
} rx_hide SEC(".maps");

// Reached from `tapswitch_rx_filter` through `rx_hide` while the daemon runs the fast path.
SEC("socket")
int tapswitch_rx_hide(struct __sk_buff *skb)
{
    struct skb_target t;
    return skb_flow(skb, &t) ? 0 : -1;
}

// The receive socket's filter on a VM TAP. First what the classic filter it replaces does
// (PacketSocket.limitUDPFrames): UDP superframes (UFO/USO), which the kernel cannot describe with a
// virtio-net header and which stall a TPACKET_V2 ring, are dropped. Then the skb path's frames.
SEC("socket")
int tapswitch_rx_filter(struct __sk_buff *skb)
{
    if (skb->gso_size != 0 && skb_l4_proto(skb) == IPPROTO_UDP)
        return 0;
    bpf_tail_call(skb, &rx_hide, 0);
    return -1;  // no fast path behind this socket (the daemon is gone): every frame to the slow path
}
