import ControlProtocol
import Foundation
import Logging
import PacketCapture
import ServiceSupport
import SwitchService
#if canImport(Glibc)
import Glibc
import Locking
#endif

/// The control socket: accepts `tapswitchctl` connections, checks who is calling, reads one request
/// line, answers through ``ControlService``.
///
/// Hostile or broken clients (garbage, oversized lines, half a request then silence, unknown fields,
/// wrong types, early close) get a one-line error where possible and never affect other clients or
/// the daemon: each connection has its own thread, a read deadline, a size limit and a send timeout.
///
/// Connections are budgeted so that no group of clients can lock the others out: request connections
/// (at most ``Options/maxConnections``) and `events --follow` streams (at most ``Options/maxFollowers``)
/// have separate limits, and when every request slot is taken, a new client evicts the connection
/// that has waited longest without sending its request line, so idle clients never block a
/// `vm start`. Only connections whose requests are being answered are never evicted.
///
/// ## Concurrency model
/// - One accept thread blocks in `poll` on the listening socket and a wake-up pipe (``stop()``
///   writes to the pipe; nothing else closes the listening fd while the thread may use it).
/// - One thread per connection does blocking I/O on that connection's fd only, and reaches the
///   async world through `blockingAwait` (a semaphore; safe because these are our own threads,
///   never the cooperative pool), whose work runs on ``DaemonExecutor``: answering never needs a
///   free cooperative-pool thread.
/// - `state` (open connection fds and their phase, the allowed group, the stopping flag) sits behind
///   a `Mutex`. ``stop()`` and eviction shut down a connection fd (under the lock) so its thread wakes
///   up and closes it; a connection thread is the only one that closes its fd, and it moves its own
///   connection from reading to working under the lock, so an evicted connection is never answered.
public final class ControlServer: Sendable {
    public struct Options: Sendable {
        public var path: String
        /// Group allowed besides root (and the daemon's own uid); nil means root only.
        public var group: String?
        /// Time a client has to send its complete request line.
        public var requestTimeout: Double = 5
        /// Time a send may block on a client that does not read.
        public var sendTimeout: Double = 5
        /// Connections reading or answering a request (followers not included).
        public var maxConnections = 64
        /// `events --follow` streams, on top of ``maxConnections``.
        public var maxFollowers = 64

        public init(path: String, group: String? = nil) {
            self.path = path
            self.group = group
        }
    }

    /// What a connection is doing.
    private enum Phase {
        /// Waiting for its request line; `ticket` orders connections by arrival (oldest evicted first).
        case reading(ticket: UInt64)
        case working
        case following
        /// Shut down to make room; its thread is finishing.
        case evicted
    }

    private struct State {
        var connections: [Int32: Phase] = [:]
        var nextTicket: UInt64 = 0
        var allowedGroup: gid_t?
        var groupName: String?
        var stopping = false

        var requestConnections: Int {
            connections.values.count(where: { switch $0 { case .reading, .working: true; case .following, .evicted: false } })
        }
        var followers: Int { connections.values.count(where: { if case .following = $0 { true } else { false } }) }

        /// The connection that has waited longest for its request line.
        var oldestReading: Int32? {
            var best: (fd: Int32, ticket: UInt64)?
            for (fd, phase) in connections {
                if case .reading(let t) = phase, t < best?.ticket ?? .max { best = (fd, t) }
            }
            return best?.fd
        }
    }

    public let options: Options
    /// Requests answered, by operation and result, with latencies (exported on `/metrics`).
    public let requestMetrics = RequestMetrics()
    private let service: ControlService
    private let logger: Logger
    private let listenFD: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let state: Locked<State>
    private let acceptDone = DispatchSemaphore(value: 0)

    /// Binds the socket (see ``UnixSocket/listen(path:group:)``) and starts accepting.
    public init(options: Options, service: ControlService, logger: Logger) throws(SwitchError) {
        self.options = options
        self.service = service
        self.logger = logger
        let gid = try Self.resolveGroup(options.group)
        listenFD = try UnixSocket.listen(path: options.path, group: gid)
        guard let fds = UnixSocket.makePipe() else {
            let e = errno
            close(listenFD)
            throw SwitchError(.system, "pipe: \(errnoText(e))")
        }
        (wakeRead, wakeWrite) = fds
        state = Locked(State(allowedGroup: gid, groupName: options.group))
        let t = Thread { [self] in acceptLoop() }
        t.name = "tapswitch-accept"
        t.start()
    }

    static func resolveGroup(_ name: String?) throws(SwitchError) -> gid_t? {
        guard let name, !name.isEmpty else { return nil }
        if let gid = gid_t(name) { return gid }
        guard let gr = getgrnam(name) else { throw SwitchError(.notFound, "control group '\(name)' does not exist") }
        return gr.pointee.gr_gid
    }

    /// Changes the group allowed to use the socket (config reload).
    public func setGroup(_ name: String?) throws(SwitchError) {
        let gid = try Self.resolveGroup(name)
        try UnixSocket.applyPermissions(path: options.path, group: gid ?? (geteuid() == 0 ? 0 : nil))
        state.withLock {
            $0.allowedGroup = gid
            $0.groupName = name
        }
    }

    /// Stops accepting, closes every connection (ending `events --follow` streams), removes the socket.
    /// Returns once the accept thread has finished.
    public func stop() {
        let conns = state.withLock { s -> [Int32] in
            guard !s.stopping else { return [] }
            s.stopping = true
            return Array(s.connections.keys)
        }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
        for fd in conns { shutdown(fd, Int32(SHUT_RDWR)) }
        acceptDone.wait()
        acceptDone.signal()
    }

    /// Number of open client connections (diagnostics, tests).
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    // MARK: - Accept

    private func acceptLoop() {
        defer {
            close(listenFD)
            unlink(options.path)
            close(wakeRead)
            close(wakeWrite)
            acceptDone.signal()
        }
        while true {
            var pfds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let n = poll(&pfds, 2, -1)
            if n < 0 {
                if errno == EINTR { continue }
                logger.critical("control socket poll failed", metadata: ["error": "\(errnoText())"])
                return
            }
            if pfds[1].revents != 0 || state.withLock({ $0.stopping }) { return }
            guard pfds[0].revents & Int16(POLLIN) != 0 else { continue }
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                // ECONNABORTED, EMFILE and friends: keep serving the others.
                if errno != EINTR && errno != EAGAIN && errno != ECONNABORTED {
                    logger.warning("accept on control socket failed", metadata: ["error": "\(errnoText())"])
                }
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var evicted = false
            let admitted = state.withLock { s -> Bool in
                guard !s.stopping else { return false }
                if s.requestConnections >= options.maxConnections {
                    // Make room: a client that has not sent its line yet loses its slot.
                    guard let victim = s.oldestReading else { return false }
                    s.connections[victim] = .evicted
                    shutdown(victim, Int32(SHUT_RDWR))
                    evicted = true
                }
                s.connections[fd] = .reading(ticket: s.nextTicket)
                s.nextTicket += 1
                return true
            }
            if evicted { logger.debug("control connection limit reached: dropped the longest-idle connection") }
            guard admitted else {
                UnixSocket.setSendTimeout(fd, seconds: 1)
                UnixSocket.sendAll(fd, Wire.encodeLine(ControlResponse.failure(SwitchError(.busy, "too many control connections (limit \(options.maxConnections)); try again"))))
                close(fd)
                continue
            }
            let t = Thread { [self] in
                serve(fd)
                state.withLock { _ = $0.connections.removeValue(forKey: fd) }
                close(fd)
            }
            t.name = "tapswitch-control"
            t.start()
        }
    }

    // MARK: - One connection

    private func reply(_ fd: Int32, _ response: ControlResponse) {
        UnixSocket.sendAll(fd, Wire.encodeLine(response))
    }

    private func serve(_ fd: Int32) {
        UnixSocket.setSendTimeout(fd, seconds: options.sendTimeout)
        guard let cred = UnixSocket.peerCredentials(fd) else {
            reply(fd, .failure(SwitchError(.permissionDenied, "permission denied: cannot read peer credentials")))
            return
        }
        if let refusal = authorize(cred) {
            logger.warning("control client refused", metadata: ["uid": "\(cred.uid)", "pid": "\(cred.pid)"])
            reply(fd, .failure(SwitchError(.permissionDenied, refusal)))
            return
        }
        let line: Data
        switch UnixSocket.readLine(fd, limit: Wire.maxRequestBytes, timeout: options.requestTimeout) {
        case .closedEmpty:
            return
        case .failure(let error):
            logger.info("bad control request", metadata: ["uid": "\(cred.uid)", "error": "\(error.message)"])
            reply(fd, .failure(error))
            return
        case .line(let l):
            line = l
        }
        let evicted = state.withLock { s -> Bool in
            guard case .reading? = s.connections[fd] else { return true }
            s.connections[fd] = .working
            return false
        }
        if evicted { return }
        let request: ControlRequest
        do {
            request = try Wire.decodeRequest(line)
        } catch {
            logger.info("bad control request", metadata: ["uid": "\(cred.uid)", "error": "\(error.description)"])
            reply(fd, .failure(SwitchError(.invalidArgument, "bad request: \(error.description)")))
            return
        }
        logger.debug("control request", metadata: ["op": "\(request.op)", "uid": "\(cred.uid)", "pid": "\(cred.pid)"])
        if case .events(follow: true, let after) = request {
            // A follower leaves the request budget for its own.
            let admitted = state.withLock { s -> Bool in
                guard s.followers < options.maxFollowers else { return false }
                s.connections[fd] = .following
                return true
            }
            guard admitted else {
                reply(fd, .failure(SwitchError(.busy, "too many event followers (limit \(options.maxFollowers)); try again")))
                return
            }
            follow(fd, after: after)
            return
        }
        if case .capture(let spec) = request {
            // A capture stream takes a follower slot, as `events --follow` does.
            let admitted = state.withLock { s -> Bool in
                guard s.followers < options.maxFollowers else { return false }
                s.connections[fd] = .following
                return true
            }
            guard admitted else {
                reply(fd, .failure(SwitchError(.busy, "too many event followers and captures (limit \(options.maxFollowers)); try again")))
                return
            }
            logger.info("capture requested", metadata: ["uid": "\(cred.uid)", "ports": "\(spec.ports.joined(separator: ","))"])
            capture(fd, spec)
            return
        }
        let service = self.service
        let started = ContinuousClock.now
        let response = blockingAwait { await service.handle(request) }
        let elapsed = ContinuousClock.now - started
        let result = response.ok ? "ok" : (response.code?.rawValue ?? "error")
        requestMetrics.record(op: request.op, result: result,
                              seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        if request.isMutating {
            // Who changed what: every state-changing request, with its caller.
            var m: Logger.Metadata = ["op": "\(request.op)", "uid": "\(cred.uid)", "pid": "\(cred.pid)", "result": "\(result)"]
            if let target = request.target { m["target"] = "\(target)" }
            if let e = response.error { m["error"] = "\(e)" }
            logger.info("control request", metadata: m)
        }
        reply(fd, response)
    }

    /// `capture`: one response line, then pcapng (section header, interfaces, packets as they come,
    /// interface statistics with the frames lost at the end) until the count is reached, the
    /// client half-closes or goes away, every captured port is deleted, or the server stops.
    /// The ring is polled every few milliseconds; a client that does not read makes the ring fill
    /// and lose frames (counted), never the switch.
    private func capture(_ fd: Int32, _ spec: CaptureRequest) {
        let backend = service.backend
        let started: Result<CaptureSession, SwitchError> = blockingAwait {
            do throws(SwitchError) { return .success(try await backend.startCapture(spec)) } catch { return .failure(error) }
        }
        let session: CaptureSession
        switch started {
        case .failure(let e):
            reply(fd, .failure(e))
            return
        case .success(let s):
            session = s
        }
        var stopped = false
        func stop() {
            guard !stopped else { return }
            stopped = true
            blockingAwait { await backend.stopCapture(session) }
        }
        defer { stop() }
        UnixSocket.setSendTimeout(fd, seconds: 30)
        guard UnixSocket.sendAll(fd, Wire.encodeLine(ControlResponse())),
              UnixSocket.sendAll(fd, Data(session.header(application: "tapswitch \(TapswitchVersion.current)"))) else { return }
        var remaining = spec.count ?? .max
        var out: [UInt8] = []
        out.reserveCapacity(1 << 20)
        var scratch = [UInt8](repeating: 0, count: 512)
        var clientGone = false
        while remaining > 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN) | UnixSocket.pollRDHUP, revents: 0)
            let n = poll(&pfd, 1, 5)
            if n < 0 && errno != EINTR { return }
            var ending = session.isOver || state.withLock({ $0.stopping })
            if n > 0 && pfd.revents != 0 {
                // The client sends nothing after its request: EOF (its Ctrl-C) or an error ends the capture.
                let r = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if r <= 0 || pfd.revents & (Int16(POLLHUP) | Int16(POLLERR)) != 0 {
                    ending = true
                    clientGone = pfd.revents & (Int16(POLLHUP) | Int16(POLLERR)) != 0
                }
            }
            if ending { stop() }
            out.removeAll(keepingCapacity: true)
            remaining -= session.drain(into: &out, limit: remaining)
            if !out.isEmpty, !UnixSocket.sendAll(fd, Data(out)) { return }
            if ending { break }
        }
        stop()
        if clientGone { return }
        out.removeAll(keepingCapacity: true)
        _ = session.drain(into: &out, limit: remaining)
        out += session.trailer()
        UnixSocket.sendAll(fd, Data(out))
    }

    /// nil when allowed, else the message for the client.
    private func authorize(_ cred: UnixSocket.PeerCredentials) -> String? {
        if cred.uid == 0 || cred.uid == geteuid() { return nil }
        let (gid, name) = state.withLock { ($0.allowedGroup, $0.groupName) }
        guard let gid else {
            return "permission denied: uid \(cred.uid) may not use tapswitchd (only root; set [control] group to allow a group)"
        }
        if cred.gid == gid || UnixSocket.supplementaryGroups(pid: cred.pid).contains(gid) { return nil }
        return "permission denied: uid \(cred.uid) is not root and not in group '\(name ?? String(gid))'"
    }

    /// `events --follow`: the history (after `after`, when given) in one line, then one line per
    /// event until the client closes, the event stream ends or the server stops.
    private func follow(_ fd: Int32, after: UInt64?) {
        let service = self.service
        let sub = blockingAwait { await service.subscribeEvents() }
        defer { sub.cancel() }
        let history = after.map { a in sub.history.filter { $0.seq > a } } ?? sub.history
        guard UnixSocket.sendAll(fd, Wire.encodeLine(ControlResponse(events: history))) else { return }

        guard let (wakeR, wakeW) = UnixSocket.makePipe() else {
            reply(fd, .failure(SwitchError(.system, "cannot follow events: pipe: \(errnoText())")))
            return
        }
        let outbox = Locked<(lines: [Data], ended: Bool)>(([], false))
        let pump = Task(executorPreference: DaemonExecutor.shared) {
            for await event in sub.live {
                outbox.withLock { $0.lines.append(Wire.encodeLine(ControlResponse(event: event))) }
                var b: UInt8 = 1
                _ = write(wakeW, &b, 1)
            }
            outbox.withLock { $0.ended = true }
            var b: UInt8 = 1
            _ = write(wakeW, &b, 1)
        }
        defer {
            pump.cancel()
            sub.cancel()
            // Let the pump finish before closing the pipe it writes to.
            blockingAwait { await pump.value }
            close(wakeR)
            close(wakeW)
        }
        var scratch = [UInt8](repeating: 0, count: 512)
        while true {
            var pfds = [pollfd(fd: fd, events: Int16(POLLIN) | UnixSocket.pollRDHUP, revents: 0),
                        pollfd(fd: wakeR, events: Int16(POLLIN), revents: 0)]
            let n = poll(&pfds, 2, -1)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            if pfds[0].revents != 0 {
                // The client sends nothing while following: data, EOF or an error all end the stream.
                let r = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if r <= 0 || pfds[0].revents & (Int16(POLLHUP) | UnixSocket.pollRDHUP | Int16(POLLERR)) != 0 { return }
            }
            if pfds[1].revents != 0 {
                while scratch.withUnsafeMutableBytes({ read(wakeR, $0.baseAddress, $0.count) }) > 0 {}
                let (lines, ended) = outbox.withLock { box -> ([Data], Bool) in
                    defer { box.lines.removeAll() }
                    return (box.lines, box.ended)
                }
                for l in lines where !UnixSocket.sendAll(fd, l) { return }
                if ended { return }
            }
            if state.withLock({ $0.stopping }) { return }
        }
    }
}
