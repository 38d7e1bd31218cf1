// What a developer needs to write an extension in their own package and build a `tapswitchd`
// that offers it next to the shipped ones, without forking tapswitch:
//
//     import TapswitchKit
//
//     final class MyFilter: SwitchExtension { ... }          // SwitchCore's protocol
//     let entry = ExtensionRegistry.Entry(name: "my-filter", extensionClass: .filtering,
//                                         summary: "...") { (s) throws(SwitchError) in try MyFilter(settings: s) }
//     await TapswitchDaemonMain.run(extensions: [entry])    // main.swift of the executable
//
// Unit tests of the extension use the `EmbeddedSwitch` product (an in-memory switch).
@_exported import SwitchCore
@_exported import SwitchExtensions
import Foundation
import SwitchService
import TapswitchDaemon

/// The one way to run `tapswitchd`: the shipped executable calls it with no extra extensions, a
/// custom build with its own. Everything else (command line, config, control socket, state,
/// packet loop) is the shipped daemon's.
public enum TapswitchDaemonMain {
    /// The registry such a build offers: the shipped extensions, then `extensions` in order.
    /// A name already taken is refused (``SwitchError/Code/exists``).
    public static func registry(adding extensions: [ExtensionRegistry.Entry]) throws(SwitchError) -> ExtensionRegistry {
        var registry = ExtensionRegistry.builtin
        for e in extensions { try registry.register(e) }
        return registry
    }

    /// Parses `tapswitchd`'s command line and runs the daemon on the host's devices, offering the
    /// shipped extensions plus `extensions`. Their `[extensions.NAME]` settings are checked by
    /// their factories when the config is loaded (also by `--check-config`), and they are enabled
    /// like the shipped ones: listed in `[extensions] enable` or with `tapswitchctl extension enable`.
    /// Exits with status 1 when two extensions share a name.
    ///
    /// Call it from the executable's top-level code (`await TapswitchDaemonMain.run(...)` in
    /// `main.swift`) before anything starts a thread: it first drops the capabilities the daemon
    /// does not need, which only holds for threads started afterwards. Main-actor isolated, so
    /// that step runs on the main thread with no hop to the cooperative pool.
    @MainActor
    public static func run(extensions: [ExtensionRegistry.Entry] = []) async {
        TapswitchD.limitCapabilities()
        let registry: ExtensionRegistry
        do {
            registry = try Self.registry(adding: extensions)
        } catch {
            FileHandle.standardError.write(Data("tapswitchd: \(error.message)\n".utf8))
            exit(1)
        }
        let factories = registry.entries.map {
            DataPlaneBackend.ExtensionFactory(name: $0.name, extensionClass: $0.extensionClass, summary: $0.summary, make: $0.make)
        }
        await TapswitchD.start(registry: registry) { DataPlaneBackend(extensions: factories) }
    }
}
