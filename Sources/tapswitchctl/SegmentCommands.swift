import ArgumentParser
import ControlProtocol

struct SegmentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "segment",
        abstract: "Carry a VLAN to other hosts in a VXLAN VNI: add, remove and list segments.",
        discussion: """
            A segment is a kernel VXLAN device that tapswitch creates and owns, attached as an external port \
            that carries the segment's VLAN untagged: frames from VMs on the VLAN leave encapsulated through \
            the underlay, frames from the VNI arrive on the VLAN. Segments are recorded and survive a daemon \
            restart; 'segment del' removes the device.
            """,
        subcommands: [SegmentAdd.self, SegmentDel.self, SegmentList.self]
    )
}

struct SegmentAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a VXLAN segment: VLAN --vlan of this switch <-> VNI --vni over --underlay.",
        discussion: """
            Creates the VXLAN device NAME (VNI, local VTEP address, UDP port, MTU --mtu) over the underlay \
            device. The underlay's MTU must carry --mtu plus 50 bytes (70 over IPv6) of encapsulation, or \
            the segment is refused. --flood lists the remote VTEPs that get a copy of every broadcast, \
            multicast and unknown-unicast frame (head-end replication); with learning on (the default) the \
            kernel learns remote MACs from arriving frames (flood and learn). Use --no-learning when a \
            control plane (FRR's BGP EVPN, see docs/evpn.md) installs the remote MACs and VTEPs.
            """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Segment name: also the name of its VXLAN device (1-15 characters: A-Z a-z 0-9 _ . -).")
    var name: String

    @Option(help: ArgumentHelp("The VLAN of this switch the segment carries (1-4094).", valueName: "id"))
    var vlan: Int

    @Option(help: ArgumentHelp("The VXLAN network identifier (1-16777215).", valueName: "vni"))
    var vni: Int

    @Option(help: ArgumentHelp("This host's VTEP address on the underlay (IPv4 or IPv6).", valueName: "ip"))
    var local: String

    @Option(help: ArgumentHelp("The underlay device the encapsulated frames use.", valueName: "dev"),
            completion: .custom(Completions.hostDevices))
    var underlay: String

    @Option(help: ArgumentHelp("Remote VTEPs for flooded frames, comma-separated.", valueName: "ip,ip..."))
    var flood: String?

    @Option(name: .customLong("udp-port"), help: ArgumentHelp("VXLAN UDP destination port.", valueName: "port"))
    var udpPort = SegmentSpec.defaultUDPPort

    @Flag(name: .customLong("no-learning"), help: "Do not learn remote MACs from arriving frames (a control plane installs them).")
    var noLearning = false

    @Flag(help: "BGP EVPN through FRR (docs/evpn.md): learning off, no flood list; the VXLAN device goes into a bridge NAME-br that zebra reads, joined to the switch by a veth NAME-sw <-> NAME-bp. VMs' known addresses (allowed-ips host addresses, DHCP-snooped leases) are advertised as MAC+IP routes; the bridge answers ARP/ND for remote ones (neigh_suppress).")
    var evpn = false

    @Option(help: ArgumentHelp("Seconds a learned remote MAC is kept without traffic from it (0: forever).", valueName: "seconds"))
    var ageing = SegmentSpec.defaultAgeing

    @Option(help: ArgumentHelp("The VMs' MTU on this segment (the VXLAN device's MTU).", valueName: "bytes"))
    var mtu = 1500

    func spec() throws(FieldError) -> SegmentSpec {
        let remotes = flood.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) } ?? []
        do {
            return try SegmentSpec(name: name, vlan: vlan, vni: vni, local: local, underlay: underlay, flood: remotes,
                                   udpPort: udpPort, learning: !noLearning, evpn: evpn, ageing: ageing, mtu: mtu).validated(prefix: "")
        } catch {
            // Name the flag the operator typed.
            let flags = ["name": "<name>", "udpPort": "--udp-port"]
            throw error.renamed(flags[error.field] ?? "--" + error.field)
        }
    }

    func validate() throws {
        do { _ = try spec() } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.segmentAdd(try spec()), globals)
        if globals.json {
            printJSON(response.segments ?? [], key: "segments")
            return
        }
        for s in response.segments ?? [] {
            print("added segment \(s.name) (VLAN \(s.vlan) <-> VNI \(s.vni) over \(s.underlay), local \(s.local)"
                + "\(s.flood.isEmpty ? "" : ", flood \(s.flood.joined(separator: ","))"), learning \(s.learning ? "on" : "off")\(s.evpn ? ", EVPN via bridge \(s.bridgeName), port \(s.portName)" : ""), mtu \(s.mtu))")
        }
    }
}

struct SegmentDel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Remove a segment: its port (PORT_TEARDOWN, PORT_DELETE), then its VXLAN device."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Segment name.")
    var name: String

    func validate() throws {
        do { _ = try Validate.interfaceName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.segmentDel(name: name), globals)
        if globals.json {
            printJSON(RemovalAnswer(removed: name, pending: response.pending))
        } else {
            print("removed segment \(name)" + pendingNote(response.pending))
        }
    }
}

struct SegmentList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the segments: NAME, VLAN, VNI, LOCAL, UNDERLAY, FLOOD, UDP port, LEARNING, MTU."
    )

    @OptionGroup var globals: GlobalOptions

    func run() throws {
        let segments = try call(.segmentList, globals).segments ?? []
        if globals.json {
            printJSON(segments, key: "segments")
            return
        }
        printTable([["NAME", "VLAN", "VNI", "LOCAL", "UNDERLAY", "FLOOD", "UDP", "LEARNING", "CONTROL", "MTU"]] + segments.map {
            [$0.name, "\($0.vlan)", "\($0.vni)", $0.local, $0.underlay, $0.flood.isEmpty ? "-" : $0.flood.joined(separator: ","),
             "\($0.udpPort)", $0.learning ? "on" : "off", $0.evpn ? "evpn" : "-", "\($0.mtu)"]
        }, numeric: [1, 2, 6, 9])
    }
}
