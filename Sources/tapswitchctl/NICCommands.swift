import ArgumentParser
import ControlProtocol
import Foundation

struct NICCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nic",
        abstract: "Save a NIC's extension state and restore it, e.g. on another host after a live migration.",
        discussion: """
            Extensions keep run-time state per NIC (ip-guard: the addresses DHCP snooping granted). The daemon \
            saves it itself across its own restarts; these commands move it with a VM: 'nic save PORT --output FILE' \
            on the source host while the port still exists (before 'vm stop' or libvirt's release), copy FILE, \
            then 'nic restore PORT FILE' on the destination once the port exists there (after 'vm start' or \
            libvirt's prepare; before or after QEMU attaches). The port name may differ. Extensions not enabled on \
            the destination, or refusing a blob (an unknown version), are named; the rest is restored.
            """,
        subcommands: [NICSave.self, NICRestore.self]
    )
}

struct NICSave: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "save",
        abstract: "Write a port's NIC state (every extension's blob) as JSON to --output or stdout.",
        discussion: "The document is {\"version\": 1, \"port\": NAME, \"nicStates\": [{\"extension\", \"version\", \"data\" (base64)}]}."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    @Option(name: [.short, .long], help: ArgumentHelp("Write to this file (a regular file is replaced atomically; a device or FIFO is written as it is) instead of stdout.", valueName: "file"),
            completion: .file())
    var output: String?

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.nicSave(name: name), globals)
        guard let states = response.nicStates else { throw CtlFailure.missing("NIC state") }
        let document = JSONOutput.object(SavedNICDocument(port: name, nicStates: states))
        guard let output else {
            print(String(decoding: document, as: UTF8.self))
            return
        }
        do {
            try OutputFile.write(document, to: output)
        } catch {
            throw CtlFailure(code: CtlExit.daemonError, message: "cannot write \(output): \(error.localizedDescription)", errorCode: "system")
        }
        if globals.json {
            printJSON(["port": name, "file": output, "extensions": states.map(\.extensionName).joined(separator: ",")])
        } else {
            let names = states.map(\.extensionName)
            print("saved NIC state of port \(name) to \(output): " + (names.isEmpty ? "no extension has any" : names.joined(separator: ", ")))
        }
    }
}

struct NICRestore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Hand a saved NIC state (from 'nic save', FILE or - for stdin) to a port's extensions.",
        discussion: "Exit code 1 if an extension in the file is not enabled here or refused its blob (the others are restored)."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    @Argument(help: "The file 'nic save' wrote, or - for stdin.", completion: .file())
    var file: String

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: file) else {
                throw CtlFailure(code: CtlExit.usage, message: "cannot read \(file)", errorCode: "usage")
            }
            data = contents
        }
        let document: SavedNICDocument
        do {
            document = try JSONDecoder().decode(SavedNICDocument.self, from: data)
        } catch {
            throw CtlFailure(code: CtlExit.usage, message: "\(file) is not a saved NIC state ('tapswitchctl nic save' output): \(error)",
                             errorCode: "usage")
        }
        let response = try call(.nicRestore(name: name, states: document.nicStates), globals)
        let refused = (response.nicStates ?? []).map(\.extensionName)
        let restored = document.nicStates.map(\.extensionName).filter { !refused.contains($0) }
        if !refused.isEmpty {
            throw CtlFailure(code: CtlExit.daemonError,
                             message: "not restored on port \(name) (extension not enabled here, or it refused the blob; see the daemon's log): "
                                 + refused.joined(separator: ", ") + "; restored: " + (restored.isEmpty ? "nothing" : restored.joined(separator: ", ")),
                             errorCode: "invalidState")
        }
        if globals.json {
            printJSON(["port": name, "restored": restored.joined(separator: ",")])
        } else {
            print("restored NIC state of port \(name): " + (restored.isEmpty ? "nothing" : restored.joined(separator: ", ")))
        }
    }
}
