import CNetlink
import CTapShim

#if canImport(Glibc)
import Glibc
#endif

/// One link notification from ``LinkMonitor``.
public enum LinkEvent: Sendable, Equatable {
    /// `RTM_NEWLINK`: a link appeared or changed (flags, carrier, MTU, address, offload features...).
    case changed(LinkInfo)
    /// `RTM_DELLINK`: the link is gone.
    case removed(index: Int32, name: String)
    /// The kernel dropped notifications (`ENOBUFS`): resynchronise with ``RouteNetlink/links()``.
    case overrun
}

/// Link notifications (`RTNLGRP_LINK`) from a non-blocking rtnetlink socket.
///
/// Watch ``pollHandle`` with an ``EventPoll`` and call ``drain(_:)`` when it is readable.
/// The kernel sends most notifications twice; handle them idempotently.
///
/// ## Concurrency model
/// Not thread-safe and not `Sendable`: create it, drain it and drop it on one serial queue. The monitor
/// owns its libnl socket and receive buffer and frees both in `deinit`; cancel any Dispatch source on
/// ``fileDescriptor`` (and let its cancel handler run) before releasing the monitor, and never close the fd
/// yourself.
public final class LinkMonitor {
    private let sock: OpaquePointer
    private let buffer: UnsafeMutableRawBufferPointer

    /// Subscribes to `RTNLGRP_LINK` in the current network namespace.
    /// - Parameter receiveBufferSize: `SO_RCVBUF` for the socket; a larger buffer means fewer overruns.
    public init(receiveBufferSize: Int = 1 << 20) throws {
        guard let sock = nl_socket_alloc() else { throw NetlinkError(operation: "nl_socket_alloc", code: NLE_NOMEM) }
        do {
            // Notifications are unsolicited: they carry no sequence number of ours.
            nl_socket_disable_seq_check(sock)
            try nlCheck("nl_connect(NETLINK_ROUTE)", nl_connect(sock, NETLINK_ROUTE))
            try nlCheck("nl_socket_add_membership(RTNLGRP_LINK)", nl_socket_add_membership(sock, Int32(RTNLGRP_LINK.rawValue)))
            try nlCheck("nl_socket_set_nonblocking", nl_socket_set_nonblocking(sock))
            try nlCheck("nl_socket_set_buffer_size", nl_socket_set_buffer_size(sock, Int32(clamping: receiveBufferSize), 0))
        } catch {
            nl_socket_free(sock)
            throw error
        }
        self.sock = sock
        // Large enough for any single rtnetlink datagram (the kernel caps them at a page-ish size, 32 KiB max).
        buffer = .allocate(byteCount: 64 * 1024, alignment: 8)
    }

    deinit {
        nl_close(sock)
        nl_socket_free(sock)
        buffer.deallocate()
    }

    /// The socket's fd, for a Dispatch read source. Owned by the monitor.
    public var fileDescriptor: Int32 { nl_socket_get_fd(sock) }

    /// What an ``EventPoll`` watches (readable: notifications pending).
    public var pollHandle: PollHandle { PollHandle(descriptor: fileDescriptor) }

    /// Reads every pending notification without blocking and reports each one.
    ///
    /// Reports ``LinkEvent/overrun`` when the kernel has dropped notifications and keeps draining.
    /// - Throws: ``SystemError`` if the socket fails for another reason.
    public func drain(_ handle: (LinkEvent) -> Void) throws {
        let fd = fileDescriptor
        while true {
            let received = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT))
            if received < 0 {
                switch errno {
                case EINTR: continue
                case EAGAIN: return
                case ENOBUFS:
                    handle(.overrun)
                    continue
                case let code: throw SystemError(operation: "recv(RTNLGRP_LINK)", errno: code)
                }
            }
            parse(byteCount: received, handle)
        }
    }

    /// Walks the netlink messages in one datagram (NLMSG_OK/NLMSG_NEXT are macros, so this is by hand).
    private func parse(byteCount: Int, _ handle: (LinkEvent) -> Void) {
        let headerSize = MemoryLayout<nlmsghdr>.size
        var offset = 0
        while byteCount - offset >= headerSize {
            let header = buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: nlmsghdr.self)
            let length = Int(header.pointee.nlmsg_len)
            if length < headerSize || length > byteCount - offset { break }
            let type = Int(header.pointee.nlmsg_type)
            if type == Int(NLMSG_OVERRUN) {
                handle(.overrun)
            } else if type == Int(RTM_NEWLINK) || type == Int(RTM_DELLINK), let info = Self.linkInfo(header) {
                handle(type == Int(RTM_NEWLINK) ? .changed(info) : .removed(index: info.index, name: info.name))
            }
            offset += (length + 3) & ~3
        }
    }

    /// Lets libnl-route's link parser turn one `RTM_*LINK` message into a ``LinkInfo``.
    private static func linkInfo(_ header: UnsafeMutablePointer<nlmsghdr>) -> LinkInfo? {
        guard let message = nlmsg_convert(header) else { return nil }
        defer { nlmsg_free(message) }
        // nl_msg_parse picks the parser by protocol + message type; a converted message has no protocol yet.
        nlmsg_set_proto(message, NETLINK_ROUTE)
        var result: LinkInfo?
        _ = withUnsafeMutablePointer(to: &result) { slot in
            nl_msg_parse(message, { object, arg in
                guard let object, let arg else { return }
                arg.assumingMemoryBound(to: LinkInfo?.self).pointee = LinkInfo(rtnlLink: object)
            }, slot)
        }
        return result
    }
}
