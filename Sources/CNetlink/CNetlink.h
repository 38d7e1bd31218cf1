// libnl-3 and libnl-route-3 as seen by Swift (module CNetlink).
//
// Only includes: libnl's function-like macros do not import, so Swift calls the functions they wrap.
// The include path (-I/usr/include/libnl3) comes from pkg-config libnl-route-3.0 (Package.swift).
#ifndef TAPSWITCH_CNETLINK_H
#define TAPSWITCH_CNETLINK_H

#include <netlink/netlink.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/object.h>
#include <netlink/socket.h>
#include <netlink/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>

#endif
