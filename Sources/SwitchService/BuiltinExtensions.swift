import SwitchCore
import SwitchExtensions

/// The extensions this daemon offers: the shipped registry (module `SwitchExtensions`), each built
/// with its default settings.
enum BuiltinExtensions {
    struct Entry: Sendable {
        let name: String
        let extensionClass: SwitchCore.ExtensionClass
        let summary: String
        let make: @Sendable () -> any SwitchExtension
    }

    static let all: [Entry] = ExtensionRegistry.builtin.entries.map { e in
        Entry(name: e.name, extensionClass: e.extensionClass, summary: e.summary) {
            // Default settings are valid for every shipped extension.
            do { return try e.make(ExtensionSettings()) } catch { preconditionFailure("\(e.name) refused its default settings: \(error)") }
        }
    }
}
