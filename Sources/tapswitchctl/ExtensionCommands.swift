import ArgumentParser
import ControlProtocol

struct ExtensionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extension",
        abstract: "Enable, disable or configure a switch extension while the switch runs.",
        discussion: """
            Changes apply from the next frame on. They are not written to the config: SIGHUP (systemctl reload) \
            applies the file's [extensions] enable list and [extensions.NAME] settings again. \
            'tapswitchctl extensions' lists what this build offers.
            """,
        subcommands: [ExtensionEnable.self, ExtensionDisable.self, ExtensionSet.self]
    )
}

struct ExtensionEnable: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable",
        abstract: "Enable an extension (at the top of its class unless --position says otherwise, as in Hyper-V)."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Extension name.", completion: .custom(Completions.extensionNames))
    var name: String

    @Option(help: ArgumentHelp("Position within its class (0 = first on ingress).", valueName: "n"))
    var position: Int?

    func validate() throws {
        do { _ = try Validate.extensionName(name, field: "<name>") } catch { throw usage(error) }
        if let position, position < 0 { throw ValidationError("--position: \(position) is negative") }
    }

    func run() throws {
        printExtensions(try call(.extensionEnable(name: name, position: position), globals), name: name, json: globals.json)
    }
}

struct ExtensionDisable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Disable an extension: it sees nothing from the next frame on.")

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Extension name.", completion: .custom(Completions.extensionNames))
    var name: String

    func validate() throws {
        do { _ = try Validate.extensionName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        printExtensions(try call(.extensionDisable(name: name), globals), name: name, json: globals.json)
    }
}

struct ExtensionSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Give an extension its settings (all of them: keys not given go back to their defaults).",
        discussion: "An unknown key or a bad value is refused naming it. An enabled extension is rebuilt in place (its counters start again)."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Extension name.", completion: .custom(Completions.extensionNames))
    var name: String

    @Argument(help: ArgumentHelp("Settings.", valueName: "key=value"))
    var settings: [String] = []

    func validate() throws {
        do {
            _ = try Validate.extensionName(name, field: "<name>")
            _ = try Validate.extensionSettings(settings, field: "<key=value>")
        } catch { throw usage(error) }
    }

    func run() throws {
        printExtensions(try call(.extensionSet(name: name, settings: settings), globals), name: name, json: globals.json)
    }
}

/// The extension's line after a change (or all of them as JSON).
func printExtensions(_ response: ControlResponse, name: String, json: Bool) {
    let list = response.extensions ?? []
    if json {
        printJSON(list, key: "extensions")
        return
    }
    guard let x = list.first(where: { $0.name == name }) else { return }
    print("\(x.name): \(x.extensionClass.rawValue), \(x.enabled ? "enabled at position \(x.position.map(String.init) ?? "?")" : "disabled")")
}
