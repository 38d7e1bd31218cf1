// See include/ctapshim.h: constants and one-line forwards only.
#include "ctapshim.h"

#include <sys/ioctl.h>
#include <linux/if.h>
#include <assert.h>
#include <sched.h>

const unsigned long TS_TUNSETIFF = TUNSETIFF;
const unsigned long TS_TUNSETPERSIST = TUNSETPERSIST;
const unsigned long TS_TUNSETOWNER = TUNSETOWNER;
const unsigned long TS_TUNSETGROUP = TUNSETGROUP;
const unsigned long TS_TUNSETOFFLOAD = TUNSETOFFLOAD;
const unsigned long TS_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ;
const unsigned long TS_TUNGETIFF = TUNGETIFF;

const unsigned short TS_IFF_TAP = IFF_TAP;
const unsigned short TS_IFF_NO_PI = IFF_NO_PI;
const unsigned short TS_IFF_VNET_HDR = IFF_VNET_HDR;
const unsigned short TS_IFF_MULTI_QUEUE = IFF_MULTI_QUEUE;
const unsigned int TS_TUN_F_CSUM = TUN_F_CSUM;
const unsigned int TS_TUN_F_TSO4 = TUN_F_TSO4;
const unsigned int TS_TUN_F_TSO6 = TUN_F_TSO6;
const unsigned int TS_TUN_F_TSO_ECN = TUN_F_TSO_ECN;
const unsigned int TS_TUN_F_UFO = TUN_F_UFO;

const unsigned int TS_IFF_LOWER_UP = IFF_LOWER_UP;

const unsigned int TS_TPACKET2_HDRLEN = TPACKET2_HDRLEN;
const unsigned int TS_TPACKET2_SLL_OFFSET = TPACKET_ALIGN(sizeof(struct tpacket2_hdr));

// The Swift side relies on these layouts matching the kernel's.
static_assert(sizeof(ts_ifreq) == sizeof(struct ifreq), "ts_ifreq must match struct ifreq");
static_assert(offsetof(ts_ifreq, flags) == offsetof(struct ifreq, ifr_flags), "ifr_flags offset");
static_assert(sizeof(ts_mmsghdr) == sizeof(struct mmsghdr), "ts_mmsghdr must match struct mmsghdr");
static_assert(offsetof(ts_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "msg_len offset");

int ts_recvmmsg(int fd, ts_mmsghdr *msgvec, unsigned int vlen, int flags, struct timespec *timeout) {
    return recvmmsg(fd, (struct mmsghdr *)msgvec, vlen, flags, timeout);
}

int ts_sendmmsg(int fd, ts_mmsghdr *msgvec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgvec, vlen, flags);
}

struct cmsghdr *ts_cmsg_firsthdr(const struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *ts_cmsg_nxthdr(struct msghdr *msg, struct cmsghdr *cmsg) { return CMSG_NXTHDR(msg, cmsg); }
void *ts_cmsg_data(struct cmsghdr *cmsg) { return CMSG_DATA(cmsg); }
size_t ts_cmsg_space(size_t payload) { return CMSG_SPACE(payload); }
size_t ts_cmsg_len(size_t payload) { return CMSG_LEN(payload); }

int ts_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int ts_ioctl_ulong(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

int ts_unshare_files(void) { return unshare(CLONE_FILES); }

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
const int TS_PR_CAPBSET_READ = PR_CAPBSET_READ;
const int TS_PR_CAPBSET_DROP = PR_CAPBSET_DROP;
const int TS_PR_CAP_AMBIENT = PR_CAP_AMBIENT;
const unsigned long TS_PR_CAP_AMBIENT_CLEAR_ALL = PR_CAP_AMBIENT_CLEAR_ALL;
const uint32_t TS_LINUX_CAPABILITY_VERSION_3 = _LINUX_CAPABILITY_VERSION_3;
int ts_prctl(int option, unsigned long arg2, unsigned long arg3) { return prctl(option, arg2, arg3, 0UL, 0UL); }
int ts_capget(struct __user_cap_header_struct *header, struct __user_cap_data_struct *data) { return (int)syscall(SYS_capget, header, data); }
int ts_capset(struct __user_cap_header_struct *header, const struct __user_cap_data_struct *data) { return (int)syscall(SYS_capset, header, data); }
