import ControlProtocol
import FakeDevices
import Foundation
import Logging
import Testing
@testable import ControlServer
import StateStore
import TestSupport
@testable import SwitchService
#if canImport(Glibc)
import Glibc
import Locking
#endif

/// The control server in-process, with the backend over in-memory devices and a short request timeout.
@Suite("Control server")
struct ControlServerTests {
    struct Fixture {
        let dir: TempDir
        let server: ControlServer
        let backend: DataPlaneBackend
        var path: String { server.options.path }

        init(requestTimeout: Double = 0.5) async throws {
            signal(SIGPIPE, SIG_IGN)
            dir = try TempDir("tswsrv")
            backend = DataPlaneBackend(devices: FakeDeviceLayer())
            try await backend.configure(SwitchSettings(), extensions: ["duplicate-mac-guard"])
            let service = ControlService(backend: backend, store: StateStore(directory: dir.file("state")), records: StateRecords(),
                                         logger: Logger(label: "test"))
            var options = ControlServer.Options(path: dir.file("run/control.sock"))
            options.requestTimeout = requestTimeout
            server = try ControlServer(options: options, service: service, logger: Logger(label: "test"))
        }

        func close() {
            server.stop()
            release()
        }

        /// Stops the backend (its packet loop must not outlive it) and removes the directory.
        func release() {
            let backend = self.backend
            Task { await backend.shutdown() }
            dir.remove()
        }

        /// Sends raw bytes, optionally half-closes, returns the reply lines.
        func exchange(_ bytes: Data, halfClose: Bool = false) async throws -> [String] {
            let path = self.path
            return try await offPool {
                let c = try ControlConnection(path: path, timeout: 10)
                defer { c.close() }
                try? c.sendRaw(bytes)
                if halfClose { c.shutdownWrite() }
                var lines: [String] = []
                while let l = try? c.readLine() { lines.append(String(decoding: l, as: UTF8.self)) }
                return lines
            }
        }

        func call(_ request: ControlRequest) async throws -> ControlResponse {
            let path = self.path
            return try await offPool { try ControlConnection.roundTrip(request, path: path, timeout: 10) }
        }

        func ping() async throws -> Bool {
            try await call(.ping).version?.protocolVersion == Wire.protocolVersion
        }
    }

    @Test("the socket is created with mode 0660 in a new directory and removed on stop")
    func socketFile() async throws {
        let f = try await Fixture()
        var st = stat()
        #expect(stat(f.path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        #expect((st.st_mode & S_IFMT) == S_IFSOCK)
        f.server.stop()
        #expect(access(f.path, F_OK) != 0)
        f.release()
    }

    @Test("a second server on a live socket is refused; a stale socket is replaced")
    func liveAndStale() async throws {
        let f = try await Fixture()
        defer { f.close() }
        let service = ControlService(backend: f.backend, store: StateStore(directory: f.dir.file("s2")), records: StateRecords(), logger: Logger(label: "t"))
        #expect(throws: SwitchError(.exists, "another tapswitchd is already listening on \(f.path)")) {
            _ = try ControlServer(options: .init(path: f.path), service: service, logger: Logger(label: "t"))
        }
        // A stale socket file: bound once, nobody listening.
        let stale = f.dir.file("stale.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: stale.utf8) }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        let s2 = try ControlServer(options: .init(path: stale), service: service, logger: Logger(label: "t"))
        #expect(try await offPool { try ControlConnection.roundTrip(.ping, path: stale) }.ok)
        s2.stop()
    }

    @Test("hostile and broken requests get one clear error line and the server keeps answering", arguments: [
        ("garbage\n", false, "bad request: request is not valid JSON"),
        ("{\"op\":\"show\",\"verbose\":true}\n", false, "bad request: verbose: unknown field (allowed: op)"),
        ("{\"op\":\"vm-stop\",\"name\":42}\n", false, "bad request: name: expected a string"),
        ("{\"op\":\"vm-st", true, "incomplete request: the connection was closed after 12 bytes without a newline"),
        ("{\"op\":\"vm-st", false, "timed out after 0.5s waiting for a complete request line (got 12 bytes)"),
        ("\n", false, "bad request: empty request"),
    ])
    func hostile(request: String, halfClose: Bool, expected: String) async throws {
        let f = try await Fixture()
        defer { f.close() }
        let lines = try await f.exchange(Data(request.utf8), halfClose: halfClose)
        #expect(lines.count == 1)
        let reply = try Wire.decodeResponse(Data((lines.first ?? "").utf8))
        #expect(reply.ok == false && reply.error == expected)
        #expect(reply.code == .invalidArgument)
        #expect(try await f.ping())
    }

    @Test("an oversized request is refused without reading it all")
    func oversized() async throws {
        let f = try await Fixture()
        defer { f.close() }
        var big = Data(#"{"op":"vm-stop","name":""#.utf8)
        big.append(Data(repeating: UInt8(ascii: "a"), count: 200_000))
        let lines = try await f.exchange(big)
        #expect(lines.first.map { (try? Wire.decodeResponse(Data($0.utf8)))?.error } == "request is larger than the limit of \(Wire.maxRequestBytes) bytes")
        #expect(try await f.ping())
    }

    @Test("clients that connect and leave, or vanish mid-stream, leave no connection behind")
    func earlyClose() async throws {
        let f = try await Fixture()
        defer { f.close() }
        let path = f.path
        try await offPool {
            for _ in 0..<20 {
                let c = try ControlConnection(path: path)
                c.close()
            }
            let follower = try ControlConnection(path: path, timeout: 10)
            try follower.send(.events(follow: true))
            _ = try follower.readLine()
            follower.close()
        }
        #expect(try await waitUntil { f.server.connectionCount == 0 })
        #expect(try await f.ping())
    }

    @Test("requests are answered while every cooperative-pool thread is blocked")
    func poolBlocked() async throws {
        let f = try await Fixture()
        defer { f.close() }
        // Occupy the whole pool: this test's own thread plus one blocker per remaining pool thread
        // (extra blockers just queue). Everything below until the release runs synchronously here.
        let width = ProcessInfo.processInfo.activeProcessorCount
        let gate = DispatchSemaphore(value: 0)
        let started = Counter()
        for _ in 0..<width {
            Task.detached { @Sendable in
                started.add()
                gate.wait()
            }
        }
        defer { for _ in 0..<width { gate.signal() } }
        // Run alone, the blockers start at once. Run in parallel with other suites they may queue
        // behind other tests' work, which keeps the pool just as busy: then go ahead anyway.
        try? TestSupport.waitUntil("pool threads blocked", timeout: .seconds(2)) { started.value >= width - 1 }
        let reply = try ControlConnection.roundTrip(.show, path: f.path, timeout: 10)
        #expect(reply.ok && reply.snapshot != nil)
    }

    @Test("many concurrent clients are all answered")
    func concurrent() async throws {
        let f = try await Fixture()
        defer { f.close() }
        let path = f.path
        let ok = await withTaskGroup(of: Bool.self) { group in
            for i in 0..<32 {
                group.addTask {
                    let r = i % 2 == 0 ? ControlRequest.show : .vmStart(VMSpec(name: "vm\(i)", nics: [NICSpec(tap: "t\(i)")]))
                    return (try? await offPool { try ControlConnection.roundTrip(r, path: path) })?.ok ?? false
                }
            }
            return await group.reduce(true) { $0 && $1 }
        }
        #expect(ok)
        #expect(await f.backend.snapshot().ports.count == 16)
    }

    @Test("finding 3: 64 events --follow streams leave requests their own budget; followers have their own limit")
    func finding3_followersDoNotExhaustTheSocket() async throws {
        let f = try await Fixture()
        defer { f.close() }
        let path = f.path
        let limit = f.server.options.maxFollowers
        let (vmStart, show, extraFollower) = try await offPool { () throws -> (ControlResponse, ControlResponse, ControlResponse?) in
            var followers: [ControlConnection] = []
            defer { for c in followers { c.close() } }
            for _ in 0..<limit {
                let c = try ControlConnection(path: path, timeout: 10)
                followers.append(c)
                try c.send(.events(follow: true))
                _ = try c.readResponse()  // the history: this one is following now
            }
            let start = try ControlConnection.roundTrip(.vmStart(VMSpec(name: "a", nics: [NICSpec(tap: "a0")])), path: path, timeout: 10)
            let show = try ControlConnection.roundTrip(.show, path: path, timeout: 10)
            // One more follower is over its own limit: refused, the requests above were not.
            let extra = try ControlConnection(path: path, timeout: 10)
            defer { extra.close() }
            try extra.send(.events(follow: true))
            return (start, show, try extra.readResponse())
        }
        #expect(vmStart.ok, "vm start with \(limit) followers open: \(vmStart.error ?? "")")
        #expect(show.ok && show.snapshot?.ports.count == 1)
        #expect(extraFollower?.code == .busy)
        #expect(extraFollower?.error == "too many event followers (limit \(limit)); try again")
        #expect(try await waitUntil { f.server.connectionCount == 0 })
    }

    @Test("finding 3: idle connections that never send a request do not lock others out")
    func finding3_idleConnectionsDoNotBlock() async throws {
        // A long request timeout: without eviction the idle clients would hold every slot for a minute.
        let f = try await Fixture(requestTimeout: 60)
        defer { f.close() }
        let path = f.path
        let limit = f.server.options.maxConnections
        let server = f.server
        let (replies, evictedClosed) = try await offPool { () throws -> ([ControlResponse], Bool) in
            var idle: [ControlConnection] = []
            defer { for c in idle { c.close() } }
            for _ in 0..<limit { idle.append(try ControlConnection(path: path, timeout: 10)) }
            try TestSupport.waitUntil("\(limit) idle connections admitted", timeout: .seconds(10)) { server.connectionCount == limit }
            var replies: [ControlResponse] = []
            for i in 0..<3 {
                replies.append(try ControlConnection.roundTrip(.vmStart(VMSpec(name: "v\(i)", nics: [NICSpec(tap: "v\(i)")])), path: path, timeout: 10))
            }
            // The oldest idle connection made room: the server closed it.
            return (replies, (try? idle[0].readLine()) == nil)
        }
        let errors = replies.compactMap { $0.error }
        #expect(errors.isEmpty && replies.count == 3, "\(errors)")
        #expect(evictedClosed)
        #expect(try await waitUntil { f.server.connectionCount == 0 })
    }

    @Test("events --follow streams history then live events in order, and ends on stop")
    func follow() async throws {
        let f = try await Fixture()
        defer { f.release() }
        _ = try await f.call(.vmStart(VMSpec(name: "a", nics: [NICSpec(tap: "a0")])))
        let path = f.path
        let server = f.server
        // The whole client side runs on one thread: it owns the (non-Sendable) connection.
        let (history, live, afterStop) = try await offPool { () throws -> ([SwitchEvent], [SwitchEvent], ControlResponse?) in
            let c = try ControlConnection(path: path, timeout: 10)
            defer { c.close() }
            try c.send(.events(follow: true))
            let history = try c.readResponse()?.events ?? []
            _ = try ControlConnection.roundTrip(.vmStop(name: "a"), path: path)
            var live: [SwitchEvent] = []
            while live.count < 4, let r = try c.readResponse(), let e = r.event { live.append(e) }
            server.stop()
            return (history, live, try c.readResponse())
        }
        #expect(history.map(\.kind) == [.portCreate, .nicCreate])
        #expect(live.map(\.kind) == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(live.map(\.seq) == [3, 4, 5, 6])
        #expect(afterStop == nil, "stop closes following clients")
    }
}

final class Counter: Sendable {
    private let count = Locked(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
