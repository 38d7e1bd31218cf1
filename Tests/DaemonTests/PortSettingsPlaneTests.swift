import ControlProtocol
import FakeDevices
import Foundation
import Logging
import StateStore
import SwitchCore
import SwitchExtensions
import Testing
@testable import DaemonConfig
@testable import SwitchService

/// The property plane without devices: config keys, `--nic` words, the wire ops, and the service
/// recording settings in the state store and announcing them.
@Suite("Port settings plane")
struct PortSettingsPlaneTests {
    let loader = ConfigLoader(availableExtensions: nil, groupExists: { _ in true })

    func configError(_ text: String) -> String? {
        do {
            _ = try loader.parse(text, file: "t.toml")
            return nil
        } catch {
            return error.description
        }
    }

    @Test("[[vm.nic]], [[internal]] and [[external]] take the port settings keys: strings, integers, booleans, arrays")
    func configKeys() throws {
        let c = try loader.parse("""
            [[internal]]
            name = "h0"
            isolated = true
            [[external]]
            device = "eth9"
            allowed-vlans = ["10", "20-22"]
            native-vlan = "untagged"
            [[vm]]
            name = "a"
              [[vm.nic]]
              tap = "a0"
              vlan = 10
              dhcp-guard = true
              allowed-ips = "10.0.0.5, 10.0.0.6"
              [[vm.nic]]
              tap = "a1"
              vlan-mode = "trunk"
              allowed-vlans = "10,20"
              native-vlan = 5
              mac-limit = 4
            """.replacingOccurrences(of: ", ", with: ","), file: "t.toml")
        #expect(c.internalPorts.first?.settings == ["pvlan=isolated"])
        #expect(c.externalPorts.first?.settings == ["vlan-mode=trunk", "allowed-vlans=10,20-22", "native-vlan=untagged"])
        #expect(c.vms.first?.nics[0].vlan == 10)
        #expect(c.vms.first?.nics[0].settings == ["allowed-ips=10.0.0.5,10.0.0.6", "dhcp-guard=on"])
        #expect(c.vms.first?.nics[1].vlan == nil)
        #expect(c.vms.first?.nics[1].settings == ["vlan-mode=trunk", "allowed-vlans=10,20", "native-vlan=5", "mac-limit=4"])
    }

    @Test("bad settings in the config are errors naming file, line, key and value", arguments: [
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmac-limit = 0\n", "t.toml:5: vm.nic.mac-limit: mac-limit=0: expected a number 1-65535 or none"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\ndhcp-guard = \"maybe\"\n", "t.toml:5: vm.nic.dhcp-guard: dhcp-guard=maybe: expected on or off"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nvlan = 10\nallowed-vlans = \"20\"\n",
         "t.toml:3: [[vm.nic]] a0: vlan-mode=trunk: conflicts with vlan=10 (vlan-mode access vs trunk)"),
        ("[[external]]\ndevice = \"eth9\"\nvlan-mode = \"trunk\"\n", "t.toml:3: external: vlan-mode=trunk: a trunk needs allowed-vlans=LIST (like 10,20,100-199, or all)"),
    ])
    func configErrors(text: String, expected: String) {
        #expect(configError(text) == expected)
    }

    @Test("--nic TAP,key=value takes the port settings; list values continue over commas")
    func nicWords() throws {
        let nics = try NICArguments.parse(["--nic", "t0,vlan-mode=trunk,allowed-vlans=10,20,100-102,native-vlan=1,dhcp-guard=on",
                                           "--nic", "t1,vlan=7,allowed-ips=10.0.0.1,10.0.0.2"])
        #expect(nics[0].vlan == nil)
        #expect(nics[0].settings == ["vlan-mode=trunk", "allowed-vlans=10,20,100-102", "native-vlan=1", "dhcp-guard=on"])
        #expect(nics[1].vlan == 7 && nics[1].settings == ["allowed-ips=10.0.0.1,10.0.0.2"])
        #expect(throws: FieldError.self) { try NICArguments.parse(["--nic", "t0,vlan=7,allowed-vlans=8"]) }
        do {
            _ = try NICArguments.parse(["--nic", "t0,router-guard=yes"])
        } catch {
            #expect(error.description == "--nic t0,router-guard=yes: router-guard=yes: expected on or off")
        }
    }

    @Test("port-set, port-get and port-reset on the wire; bad settings are refused naming the field")
    func wire() throws {
        for request in [ControlRequest.portSet(name: "t0", settings: ["vlan=5", "dhcp-guard=on"]), .portGet(name: "t0"),
                        .portReset(name: "t0", keys: ["vlan", "dhcp-guard"])] {
            #expect(try Wire.decodeRequest(Wire.encodeLine(request).dropLast()) == request)
            #expect(request.isMutating == (request != .portGet(name: "t0")))
        }
        for (json, message) in [
            (#"{"op":"port-set","name":"t0","settings":["vlan=0"]}"#, "settings: vlan=0: expected a VLAN id 1-4094"),
            (#"{"op":"port-set","name":"t0","settings":[]}"#, "settings: give at least one key=value"),
            (#"{"op":"port-reset","name":"t0","keys":["colour"]}"#, "keys: unknown port setting 'colour'"),
        ] {
            do {
                _ = try Wire.decodeRequest(Data(json.utf8))
                Issue.record("accepted \(json)")
            } catch {
                #expect("\(error)".hasPrefix(message), "\(error)")
            }
        }
    }

    @Test("the service applies a change as one request, records it in the state store, announces it, and resets it")
    func service() async throws {
        let dir = try TempDir("tswplane")
        defer { dir.remove() }
        let backend = DataPlaneBackend(devices: FakeDeviceLayer())
        try await backend.configure(SwitchSettings(), extensions: [])
        defer { Task { await backend.shutdown() } }
        let store = StateStore(directory: dir.file("state"))
        let service = ControlService(backend: backend, store: store, records: StateRecords(), logger: Logger(label: "test"))
        let nic = NICSpec(tap: "v0", mac: MACAddress("52:54:00:00:00:01"), vlan: 10)
        #expect(await service.handle(.vmStart(VMSpec(name: "v", nics: [nic]))).ok)
        #expect(await service.handle(.portGet(name: "v0")).ports?.first?.settings == ["vlan=10"])

        let set = await service.handle(.portSet(name: "v0", settings: ["vlan-mode=trunk", "allowed-vlans=10,20", "dhcp-guard=on"]))
        #expect(set.ok, "\(set.error ?? "")")
        #expect(set.ports?.first?.settings == ["vlan-mode=trunk", "allowed-vlans=10,20", "dhcp-guard=on"])
        #expect(set.ports?.first?.vlanPolicy == .trunk(allowed: [10, 20], native: nil))
        let saved = try store.load().vms.first?.nics.first
        #expect(saved?.vlan == nil && saved?.settings == ["vlan-mode=trunk", "allowed-vlans=10,20", "dhcp-guard=on"])
        let events = await service.subscribeEvents()
        events.cancel()
        #expect(events.history.last.map { "\($0.kind.rawValue) \($0.portName) \($0.detail ?? "")" }
                == "port-property v0 vlan-mode=trunk allowed-vlans=10,20 dhcp-guard=on")

        // A bad change is refused whole: nothing changes.
        let bad = await service.handle(.portSet(name: "v0", settings: ["router-guard=on", "native-vlan=9999"]))
        #expect(!bad.ok && bad.code == .invalidArgument && bad.error == "native-vlan=9999: expected a VLAN id 1-4094, untagged or none")
        #expect(await service.handle(.portGet(name: "v0")).ports?.first?.settings == ["vlan-mode=trunk", "allowed-vlans=10,20", "dhcp-guard=on"])

        let reset = await service.handle(.portReset(name: "v0", keys: ["vlan-mode", "dhcp-guard"]))
        #expect(reset.ok && reset.ports?.first?.settings == nil)
        #expect(try store.load().vms.first?.nics.first?.settings == [])
        #expect(await service.handle(.portSet(name: "nope", settings: ["vlan=3"])).code == .notFound)
    }

    @Test("[extensions.NAME] tables give settings; unknown extensions, keys and bad values are errors on their line")
    func extensionTables() throws {
        let l = ConfigLoader(availableExtensions: ["mac-spoof-guard", "mac-limit", "dhcp-guard"], groupExists: { _ in true })
        let c = try l.parse("[extensions]\nenable = [\"mac-spoof-guard\"]\n[extensions.mac-spoof-guard]\nvm-default = false\n[extensions.mac-limit]\nvm-default = 8\n", file: "t.toml")
        #expect(c.extensionSettings == ["mac-spoof-guard": ["vm-default": "off"], "mac-limit": ["vm-default": "8"]])
        func message(_ text: String) -> String? {
            do {
                _ = try l.parse(text, file: "t.toml")
                return nil
            } catch {
                return error.description
            }
        }
        #expect(message("[extensions]\n[extensions.firewall]\nx = 1\n") == "t.toml:2: [extensions.firewall]: unknown extension 'firewall' (available: dhcp-guard, mac-limit, mac-spoof-guard)")
        #expect(message("[extensions]\n[extensions.dhcp-guard]\n\ncolour = \"red\"\n") == "t.toml:4: extensions.dhcp-guard.colour: extension dhcp-guard: unknown setting 'colour' (settings: vm-default)")
        #expect(message("[extensions]\n[extensions.mac-limit]\nvm-default = 0\n") == "t.toml:3: extensions.mac-limit.vm-default: extension mac-limit: vm-default=0: expected a number 1-65535 or none")
    }

    @Test("[extensions.NAME] of an extension a build adds (TapswitchKit) is checked by its factory, on its line")
    func addedExtensionSettings() throws {
        final class Probe: SwitchExtension {
            let name = "probe"
            let extensionClass = ExtensionClass.filtering
        }
        var registry = ExtensionRegistry.builtin
        try registry.register(ExtensionRegistry.Entry(name: "probe", extensionClass: .filtering, summary: "test") { (s) throws(SwitchError) in
            try s.check(extension: "probe", known: ["level"])
            _ = try s.limit("level", extension: "probe", range: 1...3, default: 1)
            return Probe()
        })
        let l = ConfigLoader(availableExtensions: Set(registry.names), groupExists: { _ in true }, registry: registry)
        #expect(try l.parse("[extensions]\nenable = [\"probe\"]\n[extensions.probe]\nlevel = 2\n", file: "t.toml").extensionSettings == ["probe": ["level": "2"]])
        #expect(throws: ConfigError(issues: [ConfigIssue(file: "t.toml", line: 3, message: "extensions.probe.level: extension probe: level=9: expected a number 1-3 or none")])) {
            try l.parse("[extensions]\n[extensions.probe]\nlevel = 9\n", file: "t.toml")
        }
        // Without the build's registry the settings are not checked at load (the shipped loader's behaviour).
        #expect(try ConfigLoader(availableExtensions: Set(registry.names), groupExists: { _ in true })
            .parse("[extensions]\n[extensions.probe]\nlevel = 9\n", file: "t.toml").extensionSettings == ["probe": ["level": "9"]])
    }

    @Test("extension-enable/disable/set on the wire and through the service")
    func extensionOps() async throws {
        for request in [ControlRequest.extensionEnable(name: "dhcp-guard", position: 1), .extensionEnable(name: "dhcp-guard", position: nil),
                        .extensionDisable(name: "dhcp-guard"), .extensionSet(name: "dhcp-guard", settings: ["vm-default=on"])] {
            #expect(try Wire.decodeRequest(Wire.encodeLine(request).dropLast()) == request)
        }
        do {
            _ = try Wire.decodeRequest(Data(#"{"op":"extension-set","name":"x","settings":["novalue"]}"#.utf8))
            Issue.record("accepted")
        } catch {
            #expect(error.description == "settings: 'novalue' is not key=value")
        }
        let dir = try TempDir("tswext")
        defer { dir.remove() }
        let backend = DataPlaneBackend(devices: FakeDeviceLayer())
        try await backend.configure(SwitchSettings(), extensions: ["duplicate-mac-guard", "mac-spoof-guard"])
        defer { Task { await backend.shutdown() } }
        let service = ControlService(backend: backend, store: StateStore(directory: dir.file("state")), records: StateRecords(),
                                     logger: Logger(label: "test"))
        let enabled = await service.handle(.extensionEnable(name: "dhcp-guard", position: nil)).extensions
        #expect(enabled?.first { $0.name == "dhcp-guard" }?.position == 0, "a new extension goes to the top of its class")
        #expect(enabled?.first { $0.name == "duplicate-mac-guard" }?.position == 1)
        #expect(await service.handle(.extensionEnable(name: "dhcp-guard", position: nil)).code == .exists)
        #expect(await service.handle(.extensionDisable(name: "dhcp-guard")).extensions?.first { $0.name == "dhcp-guard" }?.enabled == false)
        #expect(await service.handle(.extensionDisable(name: "dhcp-guard")).code == .notFound)
        let bad = await service.handle(.extensionSet(name: "dhcp-guard", settings: ["colour=red"]))
        #expect(bad.code == .invalidArgument && bad.error == "extension dhcp-guard: unknown setting 'colour' (settings: vm-default)")
        #expect(await service.handle(.extensionSet(name: "dhcp-guard", settings: ["vm-default=on"])).ok)
    }
}
