import ArgumentParser
import ControlProtocol

struct PortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port",
        abstract: "Add or remove host ports (internal and external); read and change any port's policy settings.",
        subcommands: [PortAddInternal.self, PortAddExternal.self, PortRemove.self, PortSet.self, PortGet.self, PortReset.self]
    )
}

struct PortAddInternal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-internal",
        abstract: "Add an internal port: a host interface on the switch.",
        discussion: "The interface is created by the daemon and, with --netns, moved into that network namespace (which must exist)."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Interface name (1-15 characters: A-Z a-z 0-9 _ . -).")
    var name: String

    @Option(help: ArgumentHelp("MAC address (default: generated).", valueName: "mac"))
    var mac: String?

    @Option(help: ArgumentHelp("Network namespace to move the interface into.", valueName: "ns"))
    var netns: String?

    func spec() throws(FieldError) -> InternalPortSpec {
        InternalPortSpec(name: try Validate.interfaceName(name, field: "<name>"),
                         mac: try mac.map { m throws(FieldError) in try Validate.mac(m, field: "--mac") },
                         netns: try netns.map { n throws(FieldError) in try Validate.netnsName(n, field: "--netns") })
    }

    func validate() throws {
        do { _ = try spec() } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.portAddInternal(try spec()), globals)
        printPorts(response.ports ?? [], verb: "added internal port", json: globals.json)
    }
}

struct PortAddExternal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add-external",
        abstract: "Add an external port (an uplink): an existing host device, with its own VLAN policy.",
        discussion: """
            The switch takes over the device's traffic; use a dedicated NIC. A switch may have several external ports, \
            each with its own settings: by default an uplink trunks every VLAN; `vlan=10` makes it an access port of \
            VLAN 10 (untagged on the wire), `vlan-mode=trunk allowed-vlans=20,30` a trunk of those VLANs. Uplinks \
            that reach the same L2 network on a common VLAN make a loop: tapswitch runs no spanning tree.

            \(portSettingsHelp)
            """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Existing network device, e.g. eth1.", completion: .custom(Completions.hostDevices))
    var device: String

    @Argument(help: ArgumentHelp("Port settings (as for 'port set').", valueName: "key=value"), completion: .custom(Completions.settingAssignments))
    var settings: [String] = []

    func validate() throws {
        do { _ = try Validate.interfaceName(device, field: "<device>") } catch { throw usage(error) }
        do { _ = try PortSettings.parse(settings) } catch { throw ValidationError(error.message) }
    }

    func run() throws {
        let canonical = try PortSettings.parse(settings).assignments
        let response = try call(.portAddExternal(ExternalPortSpec(device: device, settings: canonical)), globals)
        printPorts(response.ports ?? [], verb: "added external port", json: globals.json)
    }
}

struct PortRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove an internal or external port (VM ports go with 'vm stop').",
        discussion: "Runs PORT_TEARDOWN and PORT_DELETE; an internal port's interface is deleted, an external device is released, not deleted."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.portRemove(name: name), globals)
        if globals.json {
            printJSON(RemovalAnswer(removed: name, pending: response.pending))
        } else {
            print("removed port \(name)" + pendingNote(response.pending))
        }
    }
}

func printPorts(_ ports: [PortInfo], verb: String, json: Bool) {
    if json {
        printJSON(ports, key: "ports")
        return
    }
    for p in ports {
        print("\(verb) \(p.name) (port \(p.id)\(p.mac.map { ", mac \($0)" } ?? "")\(p.netns.map { ", netns \($0)" } ?? ""))")
    }
}

/// `vm stop` / `port remove --json`.
struct RemovalAnswer: Encodable {
    var stopped: String?
    var removed: String?
    /// Ports whose NIC_DELETE ... PORT_DELETE wait for references to drain; absent when none.
    var pending: [String]?
}

/// " (removal pending: ...)" when references still hold some of the ports.
func pendingNote(_ pending: [String]?) -> String {
    guard let pending, !pending.isEmpty else { return "" }
    return " (removal pending: \(pending.joined(separator: ", ")) held by references; completes by itself, see 'tapswitchctl events')"
}

let portSettingsHelp = """
    Settings (key=value): vlan-mode=access|trunk|untagged, vlan=N (access), allowed-vlans=10,20,100-199|all \
    and native-vlan=N|untagged|none (trunk), mac-spoof-guard=on|off, allowed-macs=MAC,..., ip-guard=on|off, \
    allowed-ips=ADDR[/LEN],..., dhcp-snooping=on|off, dhcp-guard=on|off, router-guard=on|off, isolated=on|off, \
    pvlan=isolated|community:N|promiscuous|none, mac-limit=N|none; the port ACL (rules with 'tapswitchctl acl'): \
    acl-default-in=allow|deny, acl-default-out=allow|deny; storm control in frames per second: storm-broadcast=N, \
    storm-multicast=N, storm-unknown=N; policing: ingress-rate=100mbit (bits/s: kbit, mbit, gbit), \
    ingress-burst=64kb (bytes; default 10 ms at the rate), ingress-frame-rate=N (frames/s), ingress-frame-burst=N, \
    and the same with egress- (what the port receives). Any of these =none turns it off.
    """

struct PortSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Change a port's policy settings while it runs.",
        discussion: """
            The change travels down the extension stack as one vetoable request (PORT_PROPERTY_ADD/UPDATE/DELETE); \
            a veto names the extension and leaves the old settings in force. An accepted change applies to the next \
            frame, is recorded (it survives a daemon restart) and is announced as a port-property event.

            \(portSettingsHelp)
            """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name (a VM's TAP, an internal port or the uplink).", completion: .custom(Completions.portNames))
    var name: String

    @Argument(help: ArgumentHelp("Settings to change.", valueName: "key=value"), completion: .custom(Completions.settingAssignments))
    var settings: [String]

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
        guard !settings.isEmpty else { throw ValidationError("give at least one key=value") }
        do { _ = try PortSettings.parse(settings) } catch { throw ValidationError(error.message) }
    }

    func run() throws {
        let response = try call(.portSet(name: name, settings: settings), globals)
        printSettings(response.ports ?? [], json: globals.json)
    }
}

struct PortReset: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reset",
        abstract: "Put a port's settings back to their defaults.",
        discussion: "Like 'port set', one vetoable request. Any VLAN key but native-vlan resets the whole VLAN setting.\n\n\(portSettingsHelp)"
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    @Argument(help: ArgumentHelp("Settings to reset.", valueName: "key"), completion: .custom(Completions.settingKeys))
    var keys: [String]

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
        guard !keys.isEmpty else { throw ValidationError("give at least one key") }
        if let bad = keys.first(where: { !PortSettings.keys.contains($0) }) {
            throw ValidationError("unknown port setting '\(bad)' (keys: \(PortSettings.keys.joined(separator: ", ")))")
        }
    }

    func run() throws {
        let response = try call(.portReset(name: name, keys: keys), globals)
        printSettings(response.ports ?? [], json: globals.json)
    }
}

struct PortGet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Show a port's policy settings: every key, its value in force, and whether it is set or a default.",
        discussion: portSettingsHelp
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.portGet(name: name), globals)
        printSettings(response.ports ?? [], json: globals.json)
    }
}

/// `KEY VALUE SOURCE` per setting (or the ports as JSON).
func printSettings(_ ports: [PortInfo], json: Bool) {
    if json {
        printJSON(ports, key: "ports")
        return
    }
    for p in ports {
        let settings = (try? PortSettings.parse(p.settings ?? [])) ?? PortSettings()
        print("port \(p.name) (\(p.type.rawValue)\(p.nic.map { $0.vmName.isEmpty ? "" : ", VM \($0.vmName)" } ?? ""))")
        printTable([["KEY", "VALUE", "SOURCE"]] + settings.effective(for: p.type).map { [$0.key, $0.value, $0.isSet ? "set" : "default"] })
    }
}
