/*
 * tbtraffic: the fake-VM traffic tool of scripts/bench.
 *
 * Attaches to a TAP exactly as QEMU does without vhost-net (open /dev/net/tun,
 * TUNSETIFF with IFF_TAP|IFF_NO_PI [|IFF_VNET_HDR], then one read()/write()
 * per frame) and generates, sinks, echoes or times IPv4/UDP frames. Frames are
 * IPv4/UDP (not a private ethertype) so that br_netfilter sees them as it sees
 * guest traffic. Everything is allocated before the hot loops.
 *
 * Modes (output is "KEY k=v k=v" lines on stdout, errors on stderr, exit 1):
 *   sink  --tap T --mac M [--echo] [--idle-ms N] [--max-s S] [--run R]
 *         sends a broadcast hello (so the switch learns M), prints READY, then
 *         counts data frames of run R until N ms of silence after the first one,
 *         SIGTERM/SIGINT, or S seconds. --echo answers ping requests. Also reports the
 *         longest silence between two data frames (gap_max_us) and the highest sequence number.
 *   send  --tap T --mac M --dst D [--size B] [--duration S | --count N] [--rate PPS] [--run R]
 *         hello, prints START, sends data frames (paced when --rate is given).
 *         --wait-go: after the fill, print FILLED and wait for a line on stdin first.
 *   ping  --tap T --mac M --dst D [--count N] [--size B] [--timeout-ms N] [--warmup N]
 *         one request at a time to an echoing sink, RTT percentiles in µs.
 *   hold  --tap T1,T2,... --mac M (MAC of the first; others +1 each)
 *         attaches all, hello from each, prints READY, drains until signalled.
 * Common: --wait-attach: after TUNSETIFF print ATTACHED and wait for a line on stdin before
 *         sending anything (the caller waits until the switch port is forwarding: the kernel
 *         reports the carrier change through linkwatch, up to a second later).
 *         --fill N --fill-base K --fill-dst D: before READY/START, send N frames
 *         from distinct source MACs 02:fb:xx:xx:xx:xx (K..K+N-1), spread over
 *         this process's TAPs, to D (pre-fills the switch's MAC table), paced
 *         at --fill-rate PPS (default 20000). --vnet-hdr: attach with
 *         IFF_VNET_HDR and a zeroed 10-byte virtio_net_hdr on every frame.
 *         --offload (with --vnet-hdr): enable checksum and TSO offloads on the TAP
 *         (TUNSETOFFLOAD), as QEMU does for a guest with default offloads.
 * send only: --csum-partial (with --vnet-hdr): the UDP checksum is left partial (the
 *         pseudo-header sum) with VIRTIO_NET_HDR_F_NEEDS_CSUM, as such a guest sends it.
 *         --tso BYTES (with --vnet-hdr): TCP superframes of BYTES (up to 65000) with
 *         GSO TCPv4 (gso_size 1448) and a partial checksum; a sink with --offload counts
 *         them whole, one without gets the kernel's segments (only the first is counted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_TAPS 128
#define BUF_SIZE 65536
#define VNET_HDR_LEN 10
#define MAGIC 0x54425446u /* "TBTF" */
#define UDP_PORT 9        /* discard */

enum { T_HELLO = 1, T_DATA = 2, T_REQ = 3, T_RESP = 4, T_FILL = 5 };

/* Payload after the UDP header (offsets relative to the Ethernet frame). */
#define OFF_ETH 0
#define OFF_IP 14
#define OFF_UDP 34
#define OFF_PAY 42
struct payload {
    uint32_t magic;
    uint32_t run;
    uint32_t type;
    uint64_t seq;
} __attribute__((packed)); /* 20 bytes: a 64-byte frame still fits */

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static int vnet_hdr, tun_offload, csum_partial, tso_size;
static int hdr_len; /* 0 or VNET_HDR_LEN: bytes before the Ethernet header */

static void die(const char *what, const char *dev) {
    fprintf(stderr, "tbtraffic: %s%s%s: %s\n", what, dev ? " " : "", dev ? dev : "", strerror(errno));
    exit(1);
}

static void fail(const char *msg) {
    fprintf(stderr, "tbtraffic: %s\n", msg);
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t) {
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stop_flag) {
    }
}

static int parse_mac(const char *s, uint8_t mac[6]) {
    unsigned v[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return -1;
    for (int i = 0; i < 6; i++) {
        if (v[i] > 255) return -1;
        mac[i] = (uint8_t)v[i];
    }
    return 0;
}

/* Attach as QEMU does: the fd is the VM's NIC. Non-blocking so that idle
 * periods are waited for with poll(), but every frame is one read()/write(). */
static int tap_attach(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun for", name);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
    if (strlen(name) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        die("TUNSETIFF", name);
    }
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF", name);
    if (vnet_hdr) {
        int sz = VNET_HDR_LEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) die("TUNSETVNETHDRSZ", name);
    }
    if (tun_offload && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) die("TUNSETOFFLOAD", name);
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) die("O_NONBLOCK", name);
    return fd;
}

static uint16_t ip_checksum(const uint8_t *p, int len) {
    uint32_t sum = 0;
    for (int i = 0; i < len; i += 2) sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Builds an IPv4/UDP frame of `size` bytes (Ethernet header included, no FCS)
 * into buf + hdr_len. UDP checksum 0 (none), so only the payload changes later. */
static void build_frame(uint8_t *buf, int size, const uint8_t dst[6], const uint8_t src[6], uint32_t run,
                        uint32_t type) {
    memset(buf, 0, (size_t)(hdr_len + size));
    uint8_t *f = buf + hdr_len;
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t *ip = f + OFF_IP;
    int ip_len = size - 14;
    ip[0] = 0x45;
    ip[2] = (uint8_t)(ip_len >> 8);
    ip[3] = (uint8_t)ip_len;
    ip[6] = 0x40; /* DF */
    ip[8] = 64;
    ip[9] = 17;
    ip[12] = 10; ip[13] = 254; ip[14] = src[4]; ip[15] = src[5];
    ip[16] = 10; ip[17] = 254; ip[18] = dst[4]; ip[19] = dst[5];
    uint16_t c = ip_checksum(ip, 20);
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    uint8_t *udp = f + OFF_UDP;
    int udp_len = ip_len - 20;
    udp[0] = 0x9c; udp[1] = 0x40; /* 40000 */
    udp[2] = 0; udp[3] = UDP_PORT;
    udp[4] = (uint8_t)(udp_len >> 8);
    udp[5] = (uint8_t)udp_len;
    struct payload *p = (struct payload *)(f + OFF_PAY);
    p->magic = MAGIC;
    p->run = run;
    p->type = type;
}

/* TCP frames (--tso) carry the payload after a 20-byte TCP header. */
#define OFF_TCP_PAY 54
static struct payload *payload_of(uint8_t *buf) {
    uint8_t *f = buf + hdr_len;
    return (struct payload *)(f + (f[OFF_IP + 9] == 6 ? OFF_TCP_PAY : OFF_PAY));
}

static uint32_t pseudo_sum(const uint8_t *ip, int l4_len) {
    uint32_t sum = (uint32_t)(ip[12] << 8 | ip[13]) + (uint32_t)(ip[14] << 8 | ip[15]) + (uint32_t)(ip[16] << 8 | ip[17]) +
                   (uint32_t)(ip[18] << 8 | ip[19]) + ip[9] + (uint32_t)l4_len;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

/* --csum-partial: the UDP checksum as a guest with checksum offload leaves it (the pseudo-header
 * sum, which no later payload change alters) and the header saying so. */
static void make_partial_udp(uint8_t *buf, int size) {
    uint8_t *f = buf + hdr_len, *h = buf;
    uint16_t ps = (uint16_t)pseudo_sum(f + OFF_IP, size - OFF_UDP);
    f[OFF_UDP + 6] = (uint8_t)(ps >> 8);
    f[OFF_UDP + 7] = (uint8_t)ps;
    h[0] = 1;                 /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
    h[6] = OFF_UDP; h[7] = 0; /* csum_start, little endian */
    h[8] = 6; h[9] = 0;       /* csum_offset */
}

/* --tso: an IPv4/TCP superframe of `size` bytes to port 9, GSO TCPv4 with gso_size 1448. */
static void build_tso_frame(uint8_t *buf, int size, const uint8_t dst[6], const uint8_t src[6], uint32_t run) {
    build_frame(buf, OFF_TCP_PAY + (int)sizeof(struct payload), dst, src, run, T_DATA);
    uint8_t *f = buf + hdr_len, *ip = f + OFF_IP, *tcp = f + OFF_UDP, *h = buf;
    memset(f + OFF_UDP, 0, (size_t)(size - OFF_UDP));
    int ip_len = size - 14;
    ip[2] = (uint8_t)(ip_len >> 8);
    ip[3] = (uint8_t)ip_len;
    ip[9] = 6;
    ip[10] = ip[11] = 0;
    uint16_t c = ip_checksum(ip, 20);
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    tcp[0] = 0x9c; tcp[1] = 0x40;
    tcp[2] = 0; tcp[3] = UDP_PORT;
    tcp[7] = 1;              /* seq 1 */
    tcp[12] = 0x50;          /* data offset 5 */
    tcp[13] = 0x18;          /* PSH ACK */
    tcp[14] = 0xff; tcp[15] = 0xff;
    uint16_t ps = (uint16_t)pseudo_sum(ip, size - OFF_UDP);
    tcp[16] = (uint8_t)(ps >> 8);
    tcp[17] = (uint8_t)ps;
    struct payload *p = (struct payload *)(f + OFF_TCP_PAY);
    p->magic = MAGIC;
    p->run = run;
    p->type = T_DATA;
    memset(h, 0, VNET_HDR_LEN);
    h[0] = 1;                          /* NEEDS_CSUM */
    h[1] = 1;                          /* VIRTIO_NET_HDR_GSO_TCPV4 */
    h[2] = OFF_TCP_PAY; h[3] = 0;      /* hdr_len */
    h[4] = 1448 & 0xff; h[5] = 1448 >> 8;
    h[6] = OFF_UDP; h[7] = 0;          /* csum_start */
    h[8] = 16; h[9] = 0;               /* csum_offset */
}

/* Classifies a received frame: returns its type if it is one of ours for `run`, else 0. */
static uint32_t classify(uint8_t *buf, ssize_t n, uint32_t run) {
    if (n < hdr_len + OFF_PAY + (ssize_t)sizeof(struct payload)) return 0;
    uint8_t *f = buf + hdr_len;
    if (f[12] != 0x08 || f[13] != 0x00 || (f[OFF_IP + 9] != 17 && f[OFF_IP + 9] != 6) || f[OFF_UDP + 3] != UDP_PORT)
        return 0;
    if (f[OFF_IP + 9] == 6 && n < hdr_len + OFF_TCP_PAY + (ssize_t)sizeof(struct payload)) return 0;
    struct payload *p = payload_of(buf);
    if (p->magic != MAGIC || p->run != run) return 0;
    return p->type;
}

static int write_frame(int fd, const uint8_t *buf, int size) {
    for (;;) {
        ssize_t w = write(fd, buf, (size_t)(hdr_len + size));
        if (w >= 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 10);
            if (stop_flag) return -1;
            continue;
        }
        return -1;
    }
}

/* ---- options ---- */
struct opts {
    const char *mode;
    char *taps;
    const char *mac, *dst, *fill_dst;
    int size, echo, idle_ms, timeout_ms, warmup, wait_go, wait_attach;
    double duration, max_s, rate, fill_rate;
    long long count, fill, fill_base;
    uint32_t run;
};

static void usage(void) {
    fputs("usage: tbtraffic sink|send|ping|hold --tap NAME[,NAME...] --mac MAC [options]\n"
          "  see the comment at the top of Benchmarks/traffic/tbtraffic.c\n",
          stderr);
    exit(2);
}

static void parse(int argc, char **argv, struct opts *o) {
    memset(o, 0, sizeof *o);
    o->size = 64;
    o->idle_ms = 500;
    o->timeout_ms = 100;
    o->warmup = 100;
    o->max_s = 600;
    o->fill_rate = 20000;
    o->run = 1;
    if (argc < 2) usage();
    o->mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--tap")) o->taps = strdup(v);
        else if (ARG("--mac")) o->mac = v;
        else if (ARG("--dst")) o->dst = v;
        else if (ARG("--size")) o->size = atoi(v);
        else if (ARG("--duration")) o->duration = atof(v);
        else if (ARG("--count")) o->count = atoll(v);
        else if (ARG("--rate")) o->rate = atof(v);
        else if (ARG("--run")) o->run = (uint32_t)strtoul(v, NULL, 0);
        else if (ARG("--idle-ms")) o->idle_ms = atoi(v);
        else if (ARG("--max-s")) o->max_s = atof(v);
        else if (ARG("--timeout-ms")) o->timeout_ms = atoi(v);
        else if (ARG("--warmup")) o->warmup = atoi(v);
        else if (ARG("--fill")) o->fill = atoll(v);
        else if (ARG("--fill-base")) o->fill_base = atoll(v);
        else if (ARG("--fill-dst")) o->fill_dst = v;
        else if (ARG("--fill-rate")) o->fill_rate = atof(v);
        else if (strcmp(a, "--echo") == 0) o->echo = 1;
        else if (strcmp(a, "--wait-go") == 0) o->wait_go = 1;
        else if (strcmp(a, "--wait-attach") == 0) o->wait_attach = 1;
        else if (strcmp(a, "--vnet-hdr") == 0) vnet_hdr = 1;
        else if (strcmp(a, "--offload") == 0) tun_offload = 1;
        else if (strcmp(a, "--csum-partial") == 0) csum_partial = 1;
        else if (ARG("--tso")) tso_size = atoi(v);
        else {
            fprintf(stderr, "tbtraffic: unknown or incomplete option '%s'\n", a);
            usage();
        }
#undef ARG
    }
    hdr_len = vnet_hdr ? VNET_HDR_LEN : 0;
    if (!o->taps || !o->mac) fail("--tap and --mac are required");
    if (o->size < OFF_PAY + (int)sizeof(struct payload) || o->size > 1514) fail("--size must be 62..1514");
    if ((tun_offload || csum_partial || tso_size) && !vnet_hdr) fail("--offload, --csum-partial and --tso need --vnet-hdr");
    if (tso_size && (tso_size < 1600 || tso_size > 65000)) fail("--tso must be 1600..65000");
}

static uint8_t txbuf[BUF_SIZE], rxbuf[BUF_SIZE];
static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Prints `what` and blocks until the caller writes a line on stdin. */
static void handshake(const char *what) {
    printf("%s\n", what);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) fail("stdin closed during a --wait-attach/--wait-go handshake");
}

static void send_hello(int fd, const uint8_t mac[6], uint32_t run, const char *name) {
    uint8_t buf[128];
    build_frame(buf, 80, bcast, mac, run, T_HELLO);
    if (write_frame(fd, buf, 80) < 0) die("write hello to", name);
}

/* Pre-fill: N frames from distinct source MACs, round-robin over fds, paced. */
static void do_fill(int *fds, int nfd, const struct opts *o) {
    if (o->fill <= 0) return;
    uint8_t dst[6], src[6] = {0x02, 0xfb, 0, 0, 0, 0};
    if (!o->fill_dst || parse_mac(o->fill_dst, dst) < 0) fail("--fill needs a valid --fill-dst MAC");
    uint8_t buf[128];
    uint64_t t0 = now_ns();
    for (long long i = 0; i < o->fill && !stop_flag; i++) {
        uint32_t k = (uint32_t)(o->fill_base + i);
        src[2] = (uint8_t)(k >> 24); src[3] = (uint8_t)(k >> 16); src[4] = (uint8_t)(k >> 8); src[5] = (uint8_t)k;
        build_frame(buf, 80, dst, src, 0, T_FILL);
        if (write_frame(fds[i % nfd], buf, 80) < 0) die("write fill frame", NULL);
        if ((i & 63) == 63) {
            /* drain what comes back so our own queues never fill up */
            for (int j = 0; j < nfd; j++) while (read(fds[j], rxbuf, sizeof rxbuf) > 0) {}
            sleep_until(t0 + (uint64_t)((double)(i + 1) * 1e9 / o->fill_rate));
        }
    }
}

static int split_taps(char *taps, char **names) {
    int n = 0;
    for (char *s = strtok(taps, ","); s && n < MAX_TAPS; s = strtok(NULL, ",")) names[n++] = s;
    if (n == 0) fail("no TAP names");
    return n;
}

/* ---- sink ---- */
static int mode_sink(const struct opts *o) {
    uint8_t mac[6];
    if (parse_mac(o->mac, mac) < 0) fail("bad --mac");
    char *names[MAX_TAPS];
    split_taps(o->taps, names);
    int fd = tap_attach(names[0]);
    if (o->wait_attach) handshake("ATTACHED");
    send_hello(fd, mac, o->run, names[0]);
    do_fill(&fd, 1, o);
    printf("READY\n");
    fflush(stdout);
    uint64_t count = 0, bytes = 0, echoed = 0, other = 0;
    /* Longest silence between two data frames (a switch restart shows here), highest sequence number. */
    uint64_t last_data = 0, gap_max = 0, seq_max = 0;
    uint64_t deadline = now_ns() + (uint64_t)(o->max_s * 1e9);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!stop_flag) {
        ssize_t n = read(fd, rxbuf, sizeof rxbuf);
        if (n > 0) {
            uint32_t t = classify(rxbuf, n, o->run);
            if (t == T_DATA) {
                count++;
                bytes += (uint64_t)(n - hdr_len);
                uint64_t t_now = now_ns();
                if (last_data && t_now - last_data > gap_max) gap_max = t_now - last_data;
                last_data = t_now;
                if (payload_of(rxbuf)->seq > seq_max) seq_max = payload_of(rxbuf)->seq;
            } else if (t == T_REQ && o->echo) {
                uint8_t *f = rxbuf + hdr_len, tmp[6];
                memcpy(tmp, f, 6);
                memcpy(f, f + 6, 6);
                memcpy(f + 6, tmp, 6);
                payload_of(rxbuf)->type = T_RESP;
                if (write(fd, rxbuf, (size_t)n) == n) echoed++;
            } else {
                other++;
            }
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) die("read from", names[0]);
        uint64_t now = now_ns();
        if (now >= deadline) break;
        int wait = count ? o->idle_ms : 200;
        int r = poll(&pfd, 1, wait);
        if (r == 0 && count) break; /* idle after traffic: the sender is done */
        if (r < 0 && errno != EINTR) die("poll", names[0]);
    }
    printf("RX count=%llu bytes=%llu echoed=%llu other=%llu gap_max_us=%llu seq_max=%llu\n", (unsigned long long)count,
           (unsigned long long)bytes, (unsigned long long)echoed, (unsigned long long)other,
           (unsigned long long)(gap_max / 1000), (unsigned long long)seq_max);
    return 0;
}

/* ---- send ---- */
static int mode_send(const struct opts *o) {
    uint8_t mac[6], dst[6];
    if (parse_mac(o->mac, mac) < 0 || !o->dst || parse_mac(o->dst, dst) < 0) fail("bad --mac or --dst");
    if (o->duration <= 0 && o->count <= 0) fail("send needs --duration or --count");
    char *names[MAX_TAPS];
    split_taps(o->taps, names);
    int fd = tap_attach(names[0]);
    if (o->wait_attach) handshake("ATTACHED");
    send_hello(fd, mac, o->run, names[0]);
    do_fill(&fd, 1, o);
    if (o->wait_go) handshake("FILLED"); /* the caller reads the switch's table before the measured part */
    int size = o->size;
    if (tso_size) {
        size = tso_size;
        build_tso_frame(txbuf, size, dst, mac, o->run);
    } else {
        build_frame(txbuf, size, dst, mac, o->run, T_DATA);
        if (csum_partial) make_partial_udp(txbuf, size);
    }
    struct payload *p = payload_of(txbuf);
    size_t len = (size_t)(hdr_len + size);
    uint64_t limit = o->count > 0 ? (uint64_t)o->count : UINT64_MAX;
    /* Pacing: wake at most every 100 µs and send what is due, so a paced run
     * costs few wakeups and the switch sees small bursts, like a busy guest. */
    uint64_t batch = o->rate > 0 ? (uint64_t)(o->rate / 10000.0) : 64;
    if (batch < 1) batch = 1;
    printf("START\n");
    fflush(stdout);
    uint64_t start = now_ns(), end = o->duration > 0 ? start + (uint64_t)(o->duration * 1e9) : UINT64_MAX;
    uint64_t sent = 0, errors = 0, now = start, loops = 0;
    while (sent < limit && !stop_flag) {
        now = now_ns();
        if (now >= end) break;
        uint64_t burst = batch;
        if (o->rate > 0) {
            uint64_t due = (uint64_t)((double)(now - start) * o->rate / 1e9);
            if (due <= sent) {
                sleep_until(start + (uint64_t)((double)(sent + batch) * 1e9 / o->rate));
                continue;
            }
            burst = due - sent;
            if (burst > 256) burst = 256; /* far behind: do not blast to catch up */
        }
        if (burst > limit - sent) burst = limit - sent;
        for (uint64_t i = 0; i < burst; i++) {
            p->seq = sent;
            ssize_t w = write(fd, txbuf, len);
            if (w == (ssize_t)len) {
                sent++;
            } else if (w < 0 && errno == EAGAIN) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, 1);
            } else if (w < 0 && errno == EINTR) {
                break;
            } else {
                errors++;
                if (errors > 1000000) die("write to", names[0]);
            }
        }
        /* A real guest also receives: drain anything queued toward us. */
        if (o->rate > 0 || (++loops & 63) == 0)
            while (read(fd, rxbuf, sizeof rxbuf) > 0) {}
    }
    uint64_t elapsed = now_ns() - start;
    printf("TX sent=%llu errors=%llu elapsed_ns=%llu\n", (unsigned long long)sent, (unsigned long long)errors,
           (unsigned long long)elapsed);
    return 0;
}

/* ---- ping ---- */
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int mode_ping(const struct opts *o) {
    uint8_t mac[6], dst[6];
    if (parse_mac(o->mac, mac) < 0 || !o->dst || parse_mac(o->dst, dst) < 0) fail("bad --mac or --dst");
    long long n = o->count > 0 ? o->count : 10000;
    uint64_t *rtt = calloc((size_t)n, sizeof *rtt);
    if (!rtt) fail("out of memory");
    char *names[MAX_TAPS];
    split_taps(o->taps, names);
    int fd = tap_attach(names[0]);
    if (o->wait_attach) handshake("ATTACHED");
    send_hello(fd, mac, o->run, names[0]);
    build_frame(txbuf, o->size, dst, mac, o->run, T_REQ);
    struct payload *p = payload_of(txbuf);
    size_t len = (size_t)(hdr_len + o->size);
    printf("START\n");
    fflush(stdout);
    long long got = 0, lost = 0, total = n + o->warmup;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (long long i = 0; i < total && !stop_flag; i++) {
        uint64_t t0 = now_ns();
        p->seq = (uint64_t)i;
        if (write(fd, txbuf, len) != (ssize_t)len) die("write request to", names[0]);
        uint64_t deadline = t0 + (uint64_t)o->timeout_ms * 1000000ull;
        int answered = 0;
        while (!answered && !stop_flag) {
            ssize_t r = read(fd, rxbuf, sizeof rxbuf);
            if (r > 0) {
                if (classify(rxbuf, r, o->run) == T_RESP && payload_of(rxbuf)->seq == (uint64_t)i) {
                    uint64_t t1 = now_ns();
                    if (i >= o->warmup) rtt[got++] = t1 - t0;
                    answered = 1;
                }
                continue;
            }
            if (r < 0 && errno != EAGAIN && errno != EINTR) die("read from", names[0]);
            uint64_t now = now_ns();
            if (now >= deadline) break;
            int ms = (int)((deadline - now) / 1000000ull) + 1;
            if (poll(&pfd, 1, ms) < 0 && errno != EINTR) die("poll", names[0]);
        }
        if (!answered && i >= o->warmup) lost++;
    }
    if (got == 0) {
        printf("RTT n=0 lost=%lld\n", lost);
        return 0;
    }
    qsort(rtt, (size_t)got, sizeof *rtt, cmp_u64);
#define PCT(q) ((double)rtt[(size_t)((double)(got - 1) * (q))] / 1000.0)
    printf("RTT n=%lld lost=%lld min=%.1f p50=%.1f p90=%.1f p99=%.1f p999=%.1f max=%.1f\n", got, lost, PCT(0.0),
           PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), PCT(1.0));
    return 0;
}

/* ---- hold: idle fake VMs, many ports in one process ---- */
static int mode_hold(const struct opts *o) {
    uint8_t mac[6];
    if (parse_mac(o->mac, mac) < 0) fail("bad --mac");
    char *names[MAX_TAPS];
    int n = split_taps(o->taps, names);
    int fds[MAX_TAPS];
    struct pollfd pfd[MAX_TAPS];
    for (int i = 0; i < n; i++) fds[i] = tap_attach(names[i]);
    if (o->wait_attach) handshake("ATTACHED");
    for (int i = 0; i < n; i++) {
        uint8_t m[6];
        memcpy(m, mac, 6);
        m[5] = (uint8_t)(mac[5] + i);
        send_hello(fds[i], m, o->run, names[i]);
        pfd[i].fd = fds[i];
        pfd[i].events = POLLIN;
    }
    do_fill(fds, n, o);
    printf("READY\n");
    fflush(stdout);
    uint64_t drained = 0;
    while (!stop_flag) {
        int r = poll(pfd, (nfds_t)n, 500);
        if (r < 0 && errno != EINTR) die("poll", NULL);
        for (int i = 0; i < n && r > 0; i++)
            if (pfd[i].revents & POLLIN)
                while (read(fds[i], rxbuf, sizeof rxbuf) > 0) drained++;
    }
    printf("HOLD drained=%llu\n", (unsigned long long)drained);
    return 0;
}

int main(int argc, char **argv) {
    struct opts o;
    parse(argc, argv, &o);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL); /* precise pacing sleeps */
    if (strcmp(o.mode, "sink") == 0) return mode_sink(&o);
    if (strcmp(o.mode, "send") == 0) return mode_send(&o);
    if (strcmp(o.mode, "ping") == 0) return mode_ping(&o);
    if (strcmp(o.mode, "hold") == 0) return mode_hold(&o);
    usage();
    return 2;
}
