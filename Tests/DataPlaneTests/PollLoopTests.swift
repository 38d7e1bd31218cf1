@testable import DataPlane
import Dispatch
import Foundation
import LinuxNet
import Testing
import Locking

/// The packet loop's wait, on eventfds (no privileges): it must serve fds, yield the queue to
/// control blocks at once although it is blocked in epoll, tick, and stop.
@Suite("PollLoop", .serialized)
struct PollLoopTests {
    final class Flag: Sendable {
        private let value = Locked(0)
        func add() { value.withLock { $0 += 1 } }
        var count: Int { value.withLock { $0 } }
    }


    func waitUntil(_ what: String, timeout: Double = 5, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            try #require(Date() < deadline, "timed out waiting for \(what)")
            Thread.sleep(forTimeInterval: 0.001)
        }
    }

    @Test("A readable fd runs its handler on the loop's queue; unwatched, it no longer does", arguments: [0, 50])
    func servesAndUnwatches(busyPollMicroseconds: Int) throws {
        let queue = DispatchQueue(label: "test.poll")
        let loop = try PollLoop(queue: queue, busyPollLimit: UInt64(busyPollMicroseconds) * 1000)
        loop.start()
        defer { loop.stop() }
        let source = try EventFD()
        let hits = Flag()
        let watch = try loop.sync {
            try loop.watch(source.pollHandle) { _ in
                dispatchPrecondition(condition: .onQueue(queue))
                source.drain()
                hits.add()
            }
        }
        source.signal()
        try waitUntil("the handler") { hits.count >= 1 }
        try loop.sync { loop.unwatch(watch) }
        let before = hits.count
        source.signal()
        // A sync round trip after the write: had the fd still been watched, the handler would have run by now
        // or in the same slice (level-triggered, the counter is set).
        try loop.sync {}
        try loop.sync {}
        #expect(hits.count == before)
    }

    @Test("async and sync reach the queue while the loop sleeps in epoll_wait (the poke, not the tick, wakes it)")
    func controlWakesTheLoop() throws {
        let loop = try PollLoop(queue: DispatchQueue(label: "test.poll"), busyPollLimit: 0)
        loop.start()
        defer { loop.stop() }
        // With the tick an hour away, a block that did not wake the loop would wait an hour: the
        // deadlines below would expire.
        try loop.sync { loop.setTick(every: 3_600_000_000_000) {} }
        for i in 0..<20 {
            let done = Flag()
            loop.async { done.add() }
            try waitUntil("async block \(i)") { done.count == 1 }
        }
        for i in 0..<20 {
            let value = try loop.sync { i * 2 }
            #expect(value == i * 2)
        }
    }

    @Test("sync rethrows the body's error")
    func syncThrows() throws {
        struct Boom: Error {}
        let loop = try PollLoop(queue: DispatchQueue(label: "test.poll"))
        loop.start()
        defer { loop.stop() }
        #expect(throws: Boom.self) { try loop.sync { throw Boom() } }
    }

    @Test("The tick runs on schedule while no fd is ready")
    func ticks() throws {
        let loop = try PollLoop(queue: DispatchQueue(label: "test.poll"))
        loop.start()
        defer { loop.stop() }
        let ticks = Flag()
        try loop.sync { loop.setTick(every: 20_000_000) { ticks.add() } }
        try waitUntil("three ticks") { ticks.count >= 3 }
    }

    @Test("After stop, no handler runs and blocks still reach the queue")
    func stops() throws {
        let loop = try PollLoop(queue: DispatchQueue(label: "test.poll"))
        loop.start()
        let source = try EventFD()
        let hits = Flag()
        _ = try loop.sync { try loop.watch(source.pollHandle) { _ in hits.add() } }
        loop.stop()
        try loop.sync {}
        source.signal()
        try loop.sync {}
        try loop.sync {}
        #expect(hits.count == 0)
    }
}

@Suite("PollLoop deadlines (extension timers)", .serialized)
struct PollLoopDeadlineTests {
    final class Box: @unchecked Sendable {
        // Touched only on the loop's queue (and read after sync).
        var deadline: UInt64?
        var firedAt: [UInt64] = []
    }

    @Test("An idle loop wakes for the deadline (the tick is a minute away), runs the handler once on its queue, then sleeps")
    func wakesForDeadline() throws {
        let queue = DispatchQueue(label: "test.deadline")
        let loop = try PollLoop(queue: queue, busyPollLimit: 0)
        loop.start()
        defer { loop.stop() }
        let box = Box()
        try loop.sync {
            loop.setTick(every: 60_000_000_000) {}
            loop.setDeadlines(next: { box.deadline }) {
                dispatchPrecondition(condition: .onQueue(queue))
                box.firedAt.append(PollLoop.now())
                box.deadline = nil  // one-shot, as VirtualSwitch.runTimers consumes it
            }
        }
        // Control: no deadline, nothing fires.
        Thread.sleep(forTimeInterval: 0.05)
        #expect(try loop.sync { box.firedAt.isEmpty })
        let due = PollLoop.now() + 20_000_000
        try loop.sync { box.deadline = due }
        loop.async {}  // the new deadline is seen when the slice next looks (a poke makes it look now)
        let limit = Date().addingTimeInterval(5)
        while try loop.sync({ box.firedAt.isEmpty }) {
            try #require(Date() < limit, "the deadline never woke the loop")
            Thread.sleep(forTimeInterval: 0.002)
        }
        let fired = try loop.sync { box.firedAt }
        #expect(fired.count == 1)
        #expect(fired[0] >= due, "fired before its deadline")
    }
}
