import LinuxNet
import Locking

/// Collects undo actions as a test creates things, and runs them in reverse order, so a test that fails
/// half-way still deletes its devices, namespaces and processes.
///
/// ```swift
/// let cleanup = Cleanup()
/// defer { cleanup.run() }
/// try TapDevice.createPersistent(...)
/// cleanup.deleteLink(name)
/// ```
/// `run()` is idempotent and also runs from `deinit`. Failures of individual actions are ignored (the
/// thing may already be gone) but kept in ``failures`` for inspection.
public final class Cleanup: Sendable {
    private struct State {
        var actions: [(label: String, action: @Sendable () throws -> Void)] = []
        var failures: [String] = []
    }

    private let state = Locked(State())

    public init() {}

    deinit { run() }

    /// Registers an arbitrary undo action.
    public func add(_ label: String, _ action: @escaping @Sendable () throws -> Void) {
        state.withLock { $0.actions.append((label, action)) }
    }

    /// Registers the deletion of link `name` (TAP, veth, dummy...) in the current namespace.
    public func deleteLink(_ name: String) {
        add("delete link \(name)") {
            let netlink = try RouteNetlink()
            if try netlink.link(named: name) != nil { try netlink.deleteLink(name) }
        }
    }

    /// Registers the deletion of network namespace `name`.
    public func deleteNetns(_ name: String) {
        add("delete netns \(name)") {
            _ = try Shell.run(["ip", "netns", "delete", name], timeout: .seconds(10))
        }
    }

    /// Runs every registered action, newest first, and forgets them.
    public func run() {
        let actions = state.withLock { state in
            defer { state.actions.removeAll() }
            return state.actions
        }
        var failures: [String] = []
        for entry in actions.reversed() {
            do { try entry.action() } catch { failures.append("\(entry.label): \(error)") }
        }
        if !failures.isEmpty { state.withLock { $0.failures += failures } }
    }

    /// Actions that threw, as `label: error`.
    public var failures: [String] { state.withLock { $0.failures } }
}
