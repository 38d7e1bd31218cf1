import ArgumentParser
import ControlProtocol

struct MirrorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mirror",
        abstract: "Port mirroring: copy ports' traffic to another port (an analyser VM or host port).",
        discussion: """
            A mirror copies the frames its --source ports send into the switch (in), receive from it (out) \
            or both, optionally only those in VLAN --vlan, to the --to port: exactly as they were on the \
            source's wire (a trunk's tagged frames keep their tag), bypassing the destination's VLAN \
            settings. The destination keeps its own traffic (as on Hyper-V; OVS reserves a mirror's output \
            port for the copies). Copies go only into the room the destination has left after its normal \
            frames: what does not fit is dropped and counted per mirror ('mirror list', metrics \
            tapswitch_mirror_*_total), never as a port's drops. Mirrored source ports leave the XDP fast \
            path while the mirror exists. Mirrors are recorded and survive a daemon restart; a mirror whose \
            port is removed stays, inactive, and resumes when a port of that name is back.
            """,
        subcommands: [MirrorAdd.self, MirrorDel.self, MirrorList.self]
    )
}

struct MirrorAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a mirror: copies of --source ports' frames to port --to.",
        discussion: """
            --direction in: frames the sources send into the switch (as received, before any filter); out: \
            frames the switch delivers to them (as delivered); both (the default). A frame between two \
            sources of one mirror is copied once. --vlan N selects only frames in VLAN N (a trunk's tag, an \
            access port's VLAN; OVS select_vlan); without it every frame is copied. The ports must exist.
            """
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Mirror name (1-32 characters: A-Z a-z 0-9 _ . -).")
    var name: String

    @Option(help: ArgumentHelp("Ports whose traffic is copied, comma-separated.", valueName: "port,port..."),
            completion: .custom(Completions.portNames))
    var source: String

    @Option(help: ArgumentHelp("in, out or both.", valueName: "dir"))
    var direction = "both"

    @Option(help: ArgumentHelp("Copy only frames in this VLAN (1-4094).", valueName: "id"))
    var vlan: Int?

    @Option(help: ArgumentHelp("The port that receives the copies.", valueName: "port"), completion: .custom(Completions.portNames))
    var to: String

    func spec() throws(FieldError) -> MirrorSpec {
        guard let d = MirrorSpec.Direction(rawValue: direction) else {
            throw FieldError(field: "--direction", message: "'\(direction)' is not in, out or both")
        }
        let spec = MirrorSpec(name: name, source: source.split(separator: ",", omittingEmptySubsequences: false).map(String.init),
                              direction: d, vlan: vlan, to: to)
        try spec.validate(field: { $0 == "name" ? "<name>" : "--" + $0 })
        return spec
    }

    func validate() throws {
        do { _ = try spec() } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.mirrorAdd(try spec()), globals)
        if globals.json {
            printJSON(response.mirrors ?? [], key: "mirrors")
            return
        }
        for m in response.mirrors ?? [] { print("added mirror \(m.mirror.name): \(describe(m.mirror))") }
    }
}

struct MirrorDel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del",
        abstract: "Delete a mirror; its source ports may return to the fast path."
    )

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "Mirror name.")
    var name: String

    func validate() throws {
        do { _ = try Validate.mirrorName(name, field: "<name>") } catch { throw usage(error) }
    }

    func run() throws {
        let response = try call(.mirrorDel(name: name), globals)
        if globals.json {
            printJSON(response.mirrors ?? [], key: "mirrors")
        } else {
            print("deleted mirror \(name)")
        }
    }
}

struct MirrorList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the mirrors: NAME, SOURCE, DIRECTION, VLAN, TO, STATE, copies FRAMES and BYTES, copy DROPS.",
        discussion: """
            FRAMES and BYTES count the copies that reached the destination, DROPS those it had no room \
            for (or that found it not connected); none of them count as the ports' traffic or drops. \
            STATE is inactive (naming the missing ports) while the destination or every source is missing.
            """
    )

    @OptionGroup var globals: GlobalOptions

    func run() throws {
        let mirrors = try call(.mirrorList, globals).mirrors ?? []
        if globals.json {
            printJSON(mirrors, key: "mirrors")
            return
        }
        printTable([["NAME", "SOURCE", "DIRECTION", "VLAN", "TO", "STATE", "FRAMES", "BYTES", "DROPS"]] + mirrors.map {
            [$0.mirror.name, $0.mirror.source.joined(separator: ","), $0.mirror.direction.rawValue, $0.mirror.vlan.map(String.init) ?? "all",
             $0.mirror.to, mirrorState($0), "\($0.frames)", "\($0.bytes)", "\($0.drops)"]
        }, numeric: [6, 7, 8])
    }
}

func mirrorState(_ m: MirrorInfo) -> String {
    let missing = m.missing.map { " (missing \($0.joined(separator: ",")))" } ?? ""
    return (m.active ? "active" : "inactive") + missing
}

private func describe(_ m: MirrorSpec) -> String {
    "\(m.source.joined(separator: ",")) (\(m.direction.rawValue)\(m.vlan.map { ", VLAN \($0)" } ?? "")) -> \(m.to)"
}
