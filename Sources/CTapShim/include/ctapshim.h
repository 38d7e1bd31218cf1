// CTapShim: a translation table between Swift and the Linux TUN / AF_PACKET headers.
//
// Why this exists: Swift cannot import function-like macros (_IOW ioctl numbers, CMSG_*), and the Glibc
// module is built without _GNU_SOURCE, so `struct mmsghdr`, recvmmsg and sendmmsg are invisible to Swift
// (the swift-nio SR-6772 workaround). Everything here is a constant, a layout-identical struct, or a
// one-line forwarding function. No logic: link management is libnl's job (module CNetlink).
// Every symbol is prefixed ts_/TS_.
#ifndef TAPSWITCH_CTAPSHIM_H
#define TAPSWITCH_CTAPSHIM_H

#ifdef __linux__

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <linux/sockios.h>
#include <linux/filter.h>
// The packet loop's epoll set and the eventfd that wakes it (not in Swift's Glibc module).
#include <sys/epoll.h>
#include <sys/eventfd.h>

// unshare(CLONE_FILES) for the calling thread (sched.h needs _GNU_SOURCE, set for this target only).
int ts_unshare_files(void);

// MARK: TUN ioctl numbers (defined with _IOW/_IOR, which Swift cannot evaluate).
extern const unsigned long TS_TUNSETIFF;
extern const unsigned long TS_TUNSETPERSIST;
extern const unsigned long TS_TUNSETOWNER;
extern const unsigned long TS_TUNSETGROUP;
extern const unsigned long TS_TUNSETOFFLOAD;
extern const unsigned long TS_TUNSETVNETHDRSZ;
extern const unsigned long TS_TUNGETIFF;

// MARK: TUN flags (plain integer macros, re-exported with one spelling for Swift).
extern const unsigned short TS_IFF_TAP;
extern const unsigned short TS_IFF_NO_PI;
extern const unsigned short TS_IFF_VNET_HDR;
extern const unsigned short TS_IFF_MULTI_QUEUE;
extern const unsigned int TS_TUN_F_CSUM;
extern const unsigned int TS_TUN_F_TSO4;
extern const unsigned int TS_TUN_F_TSO6;
extern const unsigned int TS_TUN_F_TSO_ECN;
extern const unsigned int TS_TUN_F_UFO;

// MARK: Link flag not in glibc's <net/if.h> (IFF_LOWER_UP lives only in <linux/if.h>, which clashes with it).
extern const unsigned int TS_IFF_LOWER_UP;

// MARK: ifreq for the TUN ioctls (layout of struct ifreq's name + flags members).
/// Layout-compatible prefix of `struct ifreq` as TUNSETIFF/TUNGETIFF use it (name, then a short of flags),
/// padded to sizeof(struct ifreq) so the kernel's copy_from_user of the whole struct stays in bounds.
typedef struct {
    char name[16];
    unsigned short flags;
    char ts_padding[22];
} ts_ifreq;

// MARK: mmsghdr (layout-identical to struct mmsghdr) and the batched socket calls.
typedef struct {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} ts_mmsghdr;

int ts_recvmmsg(int fd, ts_mmsghdr *_Nonnull msgvec, unsigned int vlen, int flags,
                struct timespec *_Nullable timeout);
int ts_sendmmsg(int fd, ts_mmsghdr *_Nonnull msgvec, unsigned int vlen, int flags);

// MARK: Control messages (CMSG_* are macros).
struct cmsghdr *_Nullable ts_cmsg_firsthdr(const struct msghdr *_Nonnull msg);
struct cmsghdr *_Nullable ts_cmsg_nxthdr(struct msghdr *_Nonnull msg, struct cmsghdr *_Nonnull cmsg);
void *_Nonnull ts_cmsg_data(struct cmsghdr *_Nonnull cmsg);
size_t ts_cmsg_space(size_t payload);
size_t ts_cmsg_len(size_t payload);

// MARK: ioctl with a pointer argument (ioctl is variadic; Swift can only call it through a fixed signature).
int ts_ioctl_ptr(int fd, unsigned long request, void *_Nullable arg);
int ts_ioctl_ulong(int fd, unsigned long request, unsigned long arg);

// MARK: TPACKET_V2 receive ring (TPACKET_ALIGN / TPACKET2_HDRLEN are function-like macros).
/// TPACKET2_HDRLEN: the aligned tpacket2_hdr plus the sockaddr_ll after it; the kernel's minimum frame size.
extern const unsigned int TS_TPACKET2_HDRLEN;
/// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where the slot's sockaddr_ll starts.
extern const unsigned int TS_TPACKET2_SLL_OFFSET;

/// Acquire load of a ring slot's tp_status: the kernel fills the slot, then publishes TP_STATUS_USER with a
/// write barrier, so the frame bytes must not be read before the status. Inline: it runs once per frame.
static inline uint32_t ts_load_acquire_u32(const uint32_t *_Nonnull p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
/// Release store of a ring slot's tp_status: every read of the slot happens before the kernel may refill it.
static inline void ts_store_release_u32(uint32_t *_Nonnull p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

// MARK: Process capabilities (prctl is variadic; capget/capset have no glibc wrapper).
#include <linux/capability.h>
extern const int TS_PR_CAPBSET_READ;
extern const int TS_PR_CAPBSET_DROP;
extern const int TS_PR_CAP_AMBIENT;
extern const unsigned long TS_PR_CAP_AMBIENT_CLEAR_ALL;
extern const uint32_t TS_LINUX_CAPABILITY_VERSION_3;
int ts_prctl(int option, unsigned long arg2, unsigned long arg3);
int ts_capget(struct __user_cap_header_struct *_Nonnull header, struct __user_cap_data_struct *_Nonnull data);
int ts_capset(struct __user_cap_header_struct *_Nonnull header, const struct __user_cap_data_struct *_Nonnull data);

#endif // __linux__
#endif // TAPSWITCH_CTAPSHIM_H
