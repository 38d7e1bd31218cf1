import Foundation
import Locking
import Testing
import TestSupport

/// The `.heavy` trait itself: heavy tests take turns, and their bodies run off the cooperative pool.
@Suite("Heavy test trait")
struct HeavyTestTraitTests {
    /// How many `.heavy` cases of this suite run right now, and the most seen at once.
    static let running = Locked((now: 0, most: 0))

    @Test("heavy test cases run one at a time, even cases of one parameterized test", .heavy, arguments: 0..<4)
    func oneAtATime(_ index: Int) async throws {
        Self.running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
        // Long enough for the other cases to be started meanwhile if nothing held them back.
        try await Task.sleep(for: .milliseconds(100))
        Self.running.withLock { $0.now -= 1 }
        #expect(Self.running.withLock { $0.most } == 1, "case \(index)")
    }

    @Test("a synchronous heavy test runs on its own thread, not on the cooperative pool", .heavy)
    func synchronousBodyOffPool() throws {
        let executor = try #require(TestThreadExecutor.current)
        #expect(executor.isCurrent)
    }

    @Test("an async heavy test and its child tasks run on its own thread", .heavy)
    func asyncBodyOffPool() async throws {
        let executor = try #require(TestThreadExecutor.current)
        #expect(executor.isCurrent)
        try await Task.sleep(for: .milliseconds(10))
        #expect(executor.isCurrent, "after a suspension")
        async let child = executor.isCurrent
        #expect(await child, "in an async let child")
    }

    @Test("a light test runs on the pool")
    func lightTestOnPool() {
        #expect(TestThreadExecutor.current == nil)
    }
}
