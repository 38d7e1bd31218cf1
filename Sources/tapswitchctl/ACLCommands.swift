import ArgumentParser
import ControlProtocol

struct ACLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acl",
        abstract: "Add, list and delete a port's ACL rules (enforced by the acl extension).",
        discussion: """
            Rules are per port and direction: 'in' sees the frames the port receives (delivered to the VM), \
            'out' the frames it sends. They are evaluated lowest priority first; the first allow or deny rule \
            that matches decides, count rules count and go on; when none decides, the direction's default \
            applies (allow; set it with 'port set PORT acl-default-in=deny' or acl-default-out). Every change is \
            one vetoable property change, recorded (it survives a daemon restart). Frames from the switch \
            itself bypass the ACL.
            """,
        subcommands: [ACLAdd.self, ACLList.self, ACLDelete.self]
    )
}

struct ACLAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a rule to a port's ACL.",
        discussion: """
            Without --priority the rule goes last in its direction (highest priority there plus 10). \
            Example: tapswitchctl acl add web1-0 --direction in --proto tcp --dst-port 22 --action deny
            """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    @Option(help: ArgumentHelp("in: frames the port receives; out: frames it sends.", valueName: "in|out"))
    var direction: String

    @Option(help: ArgumentHelp("Evaluation order within the direction, lowest first (1-1000000).", valueName: "n"))
    var priority: Int?

    @Option(name: .customLong("src-mac"), help: ArgumentHelp("Source MAC address.", valueName: "mac"))
    var srcMAC: String?
    @Option(name: .customLong("dst-mac"), help: ArgumentHelp("Destination MAC address.", valueName: "mac"))
    var dstMAC: String?
    @Option(help: ArgumentHelp("EtherType: ipv4, ipv6, arp or a number like 0x88cc.", valueName: "type"))
    var ethertype: String?
    @Option(help: ArgumentHelp("VLAN the frame is in (0: untagged).", valueName: "id"))
    var vlan: String?
    @Option(name: .customLong("src-ip"), help: ArgumentHelp("Source IPv4/IPv6 address or prefix.", valueName: "addr[/len]"))
    var srcIP: String?
    @Option(name: .customLong("dst-ip"), help: ArgumentHelp("Destination IPv4/IPv6 address or prefix.", valueName: "addr[/len]"))
    var dstIP: String?
    @Option(help: ArgumentHelp("IP protocol: tcp, udp, icmp, icmpv6, sctp or 0-255.", valueName: "proto"))
    var proto: String?
    @Option(name: .customLong("src-port"), help: ArgumentHelp("TCP/UDP source port or range (needs --proto).", valueName: "n[-m]"))
    var srcPort: String?
    @Option(name: .customLong("dst-port"), help: ArgumentHelp("TCP/UDP destination port or range (needs --proto).", valueName: "n[-m]"))
    var dstPort: String?
    @Flag(help: "TCP segments with ACK or RST set: replies and the rest of a connection, not its first SYN.")
    var established = false
    @Option(name: .customLong("icmp-type"), help: ArgumentHelp("ICMP or ICMPv6 type (needs --proto icmp or icmpv6).", valueName: "n"))
    var icmpType: String?

    @Option(help: ArgumentHelp("What a match does.", valueName: "allow|deny|count"))
    var action: String

    /// The rule's words, as the daemon takes them.
    var words: [String] {
        var w = ["direction=\(direction)"]
        if let priority { w.append("priority=\(priority)") }
        let matches: [(String, String?)] = [("src-mac", srcMAC), ("dst-mac", dstMAC), ("ethertype", ethertype), ("vlan", vlan),
                                            ("src-ip", srcIP), ("dst-ip", dstIP), ("proto", proto), ("src-port", srcPort),
                                            ("dst-port", dstPort), ("icmp-type", icmpType)]
        for case (let key, let value?) in matches { w.append("\(key)=\(value)") }
        if established { w.append("established=yes") }
        w.append("action=\(action)")
        return w
    }

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
        if let bad = words.first(where: { $0.contains(" ") }) {
            throw ValidationError("--\(bad.prefix { $0 != "=" }): a value cannot contain spaces")
        }
        do { _ = try ACLRule(words: words) } catch {
            // Name the flag: the rule's messages start with the field (`dst-port=70000: ...`).
            throw ValidationError("--" + error.message)
        }
    }

    func run() throws {
        let response = try call(.aclAdd(name: name, rule: words.joined(separator: " ")), globals)
        guard let acl = response.acl else { return }
        if globals.json {
            printJSON(acl)
            return
        }
        let added = acl.rules.map(\.id).max() ?? 0
        print("added rule \(added) to port \(name)")
        printACL(acl)
    }
}

struct ACLList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show a port's ACL rules in evaluation order with their hit counters, and the defaults."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.aclList(name: name), globals)
        guard let acl = response.acl else { return }
        if globals.json {
            printJSON(acl)
        } else {
            printACL(acl)
        }
    }
}

struct ACLDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Delete a rule from a port's ACL by its id (see 'acl list')."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Port name.", completion: .custom(Completions.portNames))
    var name: String

    @Argument(help: ArgumentHelp("Rule id.", valueName: "rule-id"))
    var id: Int

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
        guard id >= 1 else { throw ValidationError("<rule-id>: \(id) is not a rule id (1 or more)") }
    }

    func run() throws {
        let response = try call(.aclDelete(name: name, id: id), globals)
        guard let acl = response.acl else { return }
        if globals.json {
            printJSON(acl)
        } else {
            print("deleted rule \(id) from port \(name)")
            printACL(acl)
        }
    }
}

/// `ID DIR PRIO MATCH ACTION HITS` per rule, then the defaults.
func printACL(_ acl: PortACLInfo) {
    print("port \(acl.port)" + (acl.enforced ? "" : " (acl extension not enabled: not enforced)"))
    if acl.rules.isEmpty {
        print("no rules")
    } else {
        printTable([["ID", "DIR", "PRIO", "MATCH", "ACTION", "HITS"]]
                   + acl.rules.map { [String($0.id), $0.direction, String($0.priority), $0.match.isEmpty ? "any" : $0.match.joined(separator: " "),
                                      $0.action, String($0.hits)] },
                   numeric: [0, 2, 5])
    }
    print("default in: \(acl.defaultIn) (\(acl.defaultInHits) frames), out: \(acl.defaultOut) (\(acl.defaultOutHits) frames)")
}
