import ArgumentParser
import ControlProtocol

struct VMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Start or stop a VM's switch ports.",
        subcommands: [VMStart.self, VMStop.self]
    )
}

struct VMStart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Create the ports and persistent TAPs for a VM's NICs.",
        usage: "tapswitchctl vm start <vm> --nic <tap>[,key=value...] [--mac <mac>] [--owner <user>] [--group <group>] [--mtu <n>] [--type synthetic|emulated] [--vlan <n>] [--nic ...]",
        discussion: """
        For each NIC the switch runs PORT_CREATE and NIC_CREATE and creates the TAP,
        owned by --owner so that QEMU running as that user can attach with
        -netdev tap,ifname=TAP,script=no,downscript=no. The NIC becomes "connected"
        by itself when QEMU attaches. If an extension vetoes any step, nothing is
        left behind and the command fails with the extension's name and reason
        (exit 1).

        NIC options (the VM name comes first):
          --nic TAP       starts a NIC; repeat for more NICs (up to \(VMSpec.maxNICs)).
          --mac MAC       guest MAC, e.g. 52:54:00:12:34:56
                          (default: generated 52:54:00:xx:xx:xx).
          --owner USER    user allowed to open the TAP, name or uid
                          (default: root only).
          --group GROUP   group allowed to open the TAP, name or gid.
          --mtu N         TAP MTU, \(Validate.mtuRange.lowerBound)..\(Validate.mtuRange.upperBound) (default \(NICSpec.defaultMTU)).
          --type TYPE     synthetic (virtio, default) or emulated (e1000...).
          --vlan N        access VLAN \(Validate.vlanRange.lowerBound)..\(Validate.vlanRange.upperBound) (default: untagged).

        Rule: per-NIC flags apply to the most recent --nic before them.
        Comma form, equivalent:
          --nic TAP,mac=MAC,owner=USER,group=GROUP,mtu=N,type=TYPE,vlan=N
        A setting given twice for one NIC, or a per-NIC flag before the
        first --nic, is an error.

        Example:
          tapswitchctl vm start web1 \\
            --nic web1-0 --mac 52:54:00:12:34:56 --owner libvirt-qemu \\
            --nic web1-1,type=emulated,vlan=20
        """
    )

    @OptionGroup var globals: GlobalOptions

    // The VM name's completion also offers the NIC flags: bash reaches it for a word starting with
    // "--" right after the name, and ArgumentParser does not know the NIC flags (NICArguments parses them).
    @Argument(help: "VM name (1-\(Validate.maxVMNameLength) characters: A-Z a-z 0-9 _ . -).",
              completion: .custom(Completions.vmNamesOrNICFlags))
    var vm: String

    @Argument(parsing: .allUnrecognized, help: ArgumentHelp(
        "NIC options: --nic TAP[,key=value...] followed by its --mac/--owner/--group/--mtu/--type/--vlan (see below).",
        valueName: "nic-options"), completion: .custom(Completions.nicFlagCompletions))
    var nicOptions: [String] = []

    func validate() throws {
        do {
            _ = try Validate.vmName(vm, field: "<vm>")
            _ = try NICArguments.parse(nicOptions)
        } catch {
            throw usage(error)
        }
    }

    func run() throws {
        let spec = VMSpec(name: vm, nics: try NICArguments.parse(nicOptions))
        let response = try call(.vmStart(spec), globals)
        let ports = response.ports ?? []
        if globals.json {
            printJSON(ports, key: "ports")
            return
        }
        print("started VM \(vm):")
        var rows = [["PORT", "TAP", "TYPE", "MAC", "MTU", "VLAN", "OWNER", "NIC"]]
        for p in ports {
            rows.append([p.id.description, p.name, p.type.rawValue, p.nic.map { $0.assignedMAC.description } ?? "-",
                         p.nic.map { String($0.mtu) } ?? "-", formatVLAN(p.vlanPolicy), p.nic?.owner ?? "root",
                         p.nic?.state.rawValue ?? "-"])
        }
        printTable(rows, numeric: [0, 4], indent: 2)
    }
}

struct VMStop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Remove a VM's ports and TAPs.",
        discussion: """
        For each NIC: NIC_DISCONNECT (if QEMU is attached), drain, NIC_DELETE, PORT_TEARDOWN, \
        PORT_DELETE, then the TAP is removed. Stop QEMU first: while a guest is still attached to \
        one of the VM's TAPs, vm stop is refused (error code busy, naming the TAP) and nothing \
        changes; --force removes the TAPs anyway, and the running guest loses its network.
        """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "VM name.", completion: .custom(Completions.vmNames))
    var vm: String

    @Flag(help: "Remove the TAPs even while a guest is attached to them (it loses its network).")
    var force = false

    func validate() throws {
        do { _ = try Validate.vmName(vm, field: "<vm>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.vmStop(name: vm, force: force), globals)
        if globals.json {
            printJSON(RemovalAnswer(stopped: vm, pending: response.pending))
        } else {
            print("stopped VM \(vm)" + pendingNote(response.pending))
        }
    }
}
