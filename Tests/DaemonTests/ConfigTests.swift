import ControlProtocol
import Foundation
import Testing
@testable import DaemonConfig
import StateStore

@Suite("Config file")
struct ConfigTests {
    let loader = ConfigLoader(availableExtensions: ["monitor", "duplicate-mac-guard", "mac-spoof-guard", "ip-guard", "dhcp-guard", "router-guard", "isolation", "mac-limit", "acl", "storm-control", "policer"], groupExists: { $0 == "kvm" || $0 == "0" })

    /// The repository root, from this file's path.
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The single error line for `text`, or nil if it parsed.
    func error(_ text: String) -> String? {
        do {
            _ = try loader.parse(text, file: "t.toml")
            return nil
        } catch {
            return error.description
        }
    }

    @Test("the shipped default config is valid and declares no devices")
    func shippedDefault() throws {
        let c = try loader.load(path: Self.repo + "/config/tapswitchd.toml")
        #expect(c.settings == SwitchSettings(name: "tapswitch0", unknownUnicast: .flood, macAgingSeconds: 300, macTableSize: 8192, macLimitPerPort: 1024))
        #expect(c.settings.transmit == .bypass)
        #expect(c.vms.isEmpty && c.internalPorts.isEmpty && c.externalPorts.isEmpty)
        #expect(c.extensions == ["duplicate-mac-guard", "mac-spoof-guard", "ip-guard", "dhcp-guard", "router-guard", "isolation", "mac-limit",
                                 "acl", "storm-control", "policer"])
        #expect(c.controlGroup == nil)
    }

    @Test("the example config declares VMs, an internal port and an uplink")
    func example() throws {
        let l = ConfigLoader(availableExtensions: ["monitor", "duplicate-mac-guard", "mac-spoof-guard", "ip-guard", "dhcp-guard", "router-guard", "isolation", "mac-limit", "acl", "storm-control", "policer"], groupExists: { _ in true })
        let c = try l.load(path: Self.repo + "/config/example-vms.toml")
        #expect(c.vms.map(\.name) == ["web1", "db1"])
        #expect(c.vms[1].nics.map(\.tap) == ["db1-0", "db1-1"])
        #expect(c.vms[1].nics[1].type == .emulated && c.vms[1].nics[1].vlan == 20 && c.vms[1].nics[1].owner == "64055")
        #expect(c.vms[0].nics[0] == NICSpec(tap: "web1-0", mac: MACAddress("52:54:00:12:34:56"), owner: "libvirt-qemu", mtu: 1500, type: .synthetic, vlan: 10))
        #expect(c.vms[1].nics[0].settings == ["dhcp-guard=on", "router-guard=on"])
        #expect(c.internalPorts == [InternalPortSpec(name: "tsw-host0", mac: MACAddress("02:00:00:00:00:01"), netns: "mgmt")])
        #expect(c.externalPorts == [ExternalPortSpec(device: "eth1")])
        #expect(c.settings.unknownUnicast == .uplink && c.settings.macLimitPerPort == 64)
    }

    @Test("full syntax: comments, literal strings, escapes, multi-line arrays, underscores")
    func syntax() throws {
        let c = try loader.parse("""
            # comment
            [switch]   # trailing comment
            name = 'sw0'
            unknown_unicast = 'uplink'
            mac_table_size = 10_000
            [extensions]
            enable = [
              "monitor",   # capture first
              "duplicate-mac-guard",
            ]
            [control]
            group = "kvm"
            nic_hold_report_seconds = 5
            [[vm]]
            name = "a"
              [[vm.nic]]
              tap = "a\\u0030"
            """, file: "t.toml")
        #expect(c.settings.name == "sw0" && c.settings.unknownUnicast == .uplink)
        #expect(c.settings.macTableSize == 10_000)
        #expect(c.extensions == ["monitor", "duplicate-mac-guard"])
        #expect(c.controlGroup == "kvm")
        #expect(c.nicHoldReportSeconds == 5)
        #expect(try loader.parse("", file: "e.toml").nicHoldReportSeconds == 30, "the default")
        #expect(try loader.parse("", file: "e.toml").metricsListen == ListenAddress(host: "127.0.0.1", port: 9717), "metrics on loopback by default")
        #expect(try loader.parse("[metrics]\nlisten = \"\"\n", file: "e.toml").metricsListen == nil, "empty disables")
        #expect(try loader.parse("[metrics]\nlisten = \"[::1]:9100\"\n", file: "e.toml").metricsListen == ListenAddress(host: "::1", port: 9100))
        #expect(c.vms == [VMSpec(name: "a", nics: [NICSpec(tap: "a0")])])
    }

    @Test("syntax errors name file and line", arguments: [
        ("[switch]\nname = \"x", "t.toml:2: unterminated string (started on line 2)"),
        ("[switch\n", "t.toml:1: expected ']' to close the table header"),
        ("[switch]\nname \"x\"\n", "t.toml:2: expected '=' after key 'name', found '\"'"),
        ("[switch]\nname = x\n", "t.toml:2: invalid value 'x' for 'name' (strings need quotes: \"x\")"),
        ("[switch]\nmac_aging_seconds = 1.5\n", "t.toml:2: floating-point values are not supported ('1.5')"),
        ("[switch]\nname = {a = 1}\n", "t.toml:2: inline tables are not supported; use a [table] header"),
        ("[switch]\nname = \"a\" name2 = \"b\"\n", "t.toml:2: unexpected 'n' after the value of 'name'; expected end of line"),
        ("[switch]\nname = \"a\"\nname = \"b\"\n", "t.toml:3: duplicate key 'switch.name' (first set at line 2)"),
        ("[switch]\n[switch]\n", "t.toml:2: table [switch] is defined twice (first at line 1)"),
        ("\n[[vm.nic]]\ntap = \"a\"\n", "t.toml:2: [[vm.nic]] must come after a [[vm]] or [vm] it belongs to"),
        ("[extensions]\nenable = [\"a\", 3]\n", "t.toml:2: 'enable' must be an array of strings; found '3'"),
        ("[extensions]\nenable = [\"a\"\n", "t.toml:2: unterminated array for 'enable' (started on line 2)"),
        ("[switch]\nswitch.name = \"a\"\n", "t.toml:2: dotted keys are not supported; put 'switch' keys under a [switch.switch] header"),
        ("[switch]\nname = \"a\\q\"\n", "t.toml:2: invalid escape '\\q' in string"),
        ("[switch]\nmac_table_size = 0123\n", "t.toml:2: invalid value '0123' for 'mac_table_size' (strings need quotes: \"0123\")"),
    ])
    func syntaxErrors(text: String, expected: String) {
        #expect(error(text) == expected)
    }

    @Test("semantic errors name file and line", arguments: [
        ("[switch]\nbogus = 1\n", "t.toml:2: unknown key 'switch.bogus' (known: switch.name, switch.unknown_unicast, switch.mac_aging_seconds, switch.mac_table_size, switch.mac_limit_per_port, switch.busy_poll_us, switch.offload, switch.transmit)"),
        ("[routing]\n", "t.toml:1: unknown table 'routing' (known: switch, control, metrics, extensions, internal, external, segment, vm, mirror)"),
        ("name = \"x\"\n", "t.toml:1: key 'name' must be inside a table such as [switch]"),
        ("[switch]\nname = \"way-too-long-name0\"\n", "t.toml:2: switch.name: interface name 'way-too-long-name0' is 18 characters; the limit is 15"),
        ("[switch]\nunknown_unicast = \"drop\"\n", "t.toml:2: switch.unknown_unicast: 'drop' is not one of: flood, uplink"),
        ("[switch]\nmac_aging_seconds = \"300\"\n", "t.toml:2: 'switch.mac_aging_seconds' must be an integer, not a string"),
        ("[switch]\nmac_aging_seconds = 5\n", "t.toml:2: switch.mac_aging_seconds: 5 is out of range 10..1000000"),
        ("[switch]\nmac_table_size = 100\nmac_limit_per_port = 101\n", "t.toml:3: switch.mac_limit_per_port: 101 is out of range 1..100 (mac_table_size)"),
        ("[switch]\nname = \"s\"\nbusy_poll_us = 5000\n", "t.toml:3: switch.busy_poll_us: 5000 is out of range 0..1000"),
        ("[switch]\noffload = \"dpdk\"\n", "t.toml:2: switch.offload: 'dpdk' is not one of: xdp, off"),
        ("[switch]\nname = \"s\"\ntransmit = \"tcpdump\"\n", "t.toml:3: switch.transmit: 'tcpdump' is not one of: bypass, qdisc"),
        ("[control]\ngroup = \"nosuchgroup\"\n", "t.toml:2: control.group: group 'nosuchgroup' does not exist"),
        ("[control]\nnic_hold_report_seconds = 0\n", "t.toml:2: control.nic_hold_report_seconds: 0 is out of range 1..86400"),
        ("[metrics]\nlisten = \"localhost:9717\"\n", "t.toml:2: metrics.listen: 'localhost' in 'localhost:9717' is not an IP address (names are not resolved)"),
        ("[metrics]\nlisten = \"127.0.0.1\"\n", "t.toml:2: metrics.listen: '127.0.0.1' is not HOST:PORT (for example 127.0.0.1:9717; empty disables)"),
        ("[metrics]\n\nlisten = \"127.0.0.1:99999\"\n", "t.toml:3: metrics.listen: '99999' in '127.0.0.1:99999' is not a port (0..65535)"),
        ("[metrics]\nlisten = \"::1:9717\"\n", "t.toml:2: metrics.listen: '::1:9717': put an IPv6 address in brackets, as in [::1]:9717"),
        ("[metrics]\nport = 9717\n", "t.toml:2: unknown key 'metrics.port' (known: metrics.listen)"),
        ("[extensions]\nenable = [\"firewall\"]\n", "t.toml:2: extensions.enable: unknown extension 'firewall' (available: acl, dhcp-guard, duplicate-mac-guard, ip-guard, isolation, mac-limit, mac-spoof-guard, monitor, policer, router-guard, storm-control)"),
        ("[extensions]\nenable = \"monitor\"\n", "t.toml:2: 'extensions.enable' must be an array of strings, not a string"),
        ("[vm]\nname = \"a\"\n", "t.toml:1: 'vm' is an array of tables: write [[vm]], not [vm]"),
        ("[[switch]]\n", "t.toml:1: 'switch' is a single table: write [switch], not [[switch]]"),
        ("[[vm]]\nname = \"a\"\n", "t.toml:1: VM 'a' has no [[vm.nic]]"),
        ("[[vm]]\n[[vm.nic]]\ntap = \"a0\"\n", "t.toml:1: [[vm]] needs a name"),
        ("[[vm]]\nname = \"-a\"\n[[vm.nic]]\ntap = \"a0\"\n", "t.toml:2: vm.name: VM name '-a' must start with a letter or digit"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\nmac = \"52:54:00:00:00:01\"\n", "t.toml:3: [[vm.nic]] needs a tap"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmac = \"52:54:00:00:00\"\n",
         "t.toml:5: vm.nic.mac: '52:54:00:00:00' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmac = \"01:00:5e:00:00:01\"\n",
         "t.toml:5: vm.nic.mac: '01:00:5e:00:00:01' is a multicast address (low bit of the first octet set); a NIC needs a unicast MAC"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmtu = 67\n", "t.toml:5: vm.nic.mtu: MTU 67 is out of range 68..65535"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nvlan = 4095\n", "t.toml:5: vm.nic.vlan: VLAN 4095 is out of range 1..4094"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\ntype = \"virtio\"\n", "t.toml:5: vm.nic.type: 'virtio' is not a NIC type (expected one of: synthetic, emulated)"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nowner = \"bad user\"\n", "t.toml:5: vm.nic.owner: 'bad user' is not a valid user name or numeric id"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nspeed = 10\n", "t.toml:5: unknown key 'vm.nic.speed' (known: vm.nic.tap, vm.nic.mac, vm.nic.owner, vm.nic.group, vm.nic.mtu, vm.nic.type, vm.nic.vlan-mode, vm.nic.vlan, vm.nic.allowed-vlans, vm.nic.native-vlan, vm.nic.mac-spoo…(298 characters left out)…unknown, vm.nic.ingress-rate, vm.nic.ingress-burst, vm.nic.ingress-frame-rate, vm.nic.ingress-frame-burst, vm.nic.egress-rate, vm.nic.egress-burst, vm.nic.egress-frame-rate, vm.nic.egress-frame-burst)"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"x0\"\n[[vm]]\nname = \"b\"\n[[vm.nic]]\ntap = \"x0\"\n", "t.toml:8: interface name 'x0' is already used (line 4)"),
        ("[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\n[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a1\"\n", "t.toml:6: VM 'a' is declared twice (first at line 2)"),
        ("[[internal]]\nname = \"h0\"\nmac = \"02:00:00:00:00:01\"\n[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmac = \"02:00:00:00:00:01\"\n",
         "t.toml:8: MAC 02:00:00:00:00:01 is already used (line 3)"),
        ("[[internal]]\nname = \"h0\"\nnetns = \"../x\"\n", "t.toml:3: internal.netns: namespace name '../x' contains '/'; allowed are A-Z a-z 0-9 _ . -"),
        ("[[external]]\ndevice = \"e1\"\n[[external]]\ndevice = \"e1\"\n", "t.toml:4: interface name 'e1' is already used (line 2)"),
        ("[[external]]\n", "t.toml:1: [[external]] needs a device"),
    ])
    func semanticErrors(text: String, expected: String) {
        #expect(error(text) == expected)
    }

    static let segment = "[[segment]]\nname = \"vx1\"\nvlan = 10\nvni = 100\nlocal = \"192.0.2.1\"\nunderlay = \"eth0\"\n"
    static let segmentCases: [(String, String)] = [
        ("[[segment]]\nname = \"vx1\"\nvni = 100\nlocal = \"192.0.2.1\"\nunderlay = \"eth0\"\n", "t.toml:1: [[segment]] needs vlan"),
        (Self.segment + "flood = [\"192.0.2.1\"]\n", "t.toml:1: segment.flood: '192.0.2.1' is this host's own VTEP (local)"),
        (Self.segment + "udp_port = 0\n", "t.toml:1: segment.udp_port: UDP port 0 is out of range 1..65535"),
        (Self.segment + "vxlan = 1\n", "t.toml:7: unknown key 'segment.vxlan' (known: segment.name, segment.vlan, segment.vni, segment.local, segment.underlay, segment.flood, segment.udp_port, segment.learning, segment.evpn, segment.ageing, segment.mtu)"),
        (Self.segment + "[[segment]]\nname = \"vx2\"\nvlan = 10\nvni = 200\nlocal = \"192.0.2.1\"\nunderlay = \"eth0\"\n",
         "t.toml:9: segment.vlan: VLAN 10 already has a segment (line 3)"),
    ]

    @Test("[[segment]] errors name file and line", arguments: segmentCases)
    func segmentErrors(text: String, expected: String) {
        #expect(error(text) == expected)
    }

    @Test("[[segment]] with every key, and several [[external]] uplinks")
    func segmentsAndUplinks() throws {
        let c = try loader.parse(Self.segment + """
            flood = ["192.0.2.2", "192.0.2.3"]
            udp_port = 8472
            learning = false
            ageing = 60
            mtu = 1450

            [[external]]
            device = "eth1"
            vlan = 10

            [[external]]
            device = "eth2"
            """, file: "t.toml")
        #expect(c.segments == [SegmentSpec(name: "vx1", vlan: 10, vni: 100, local: "192.0.2.1", underlay: "eth0",
                                           flood: ["192.0.2.2", "192.0.2.3"], udpPort: 8472, learning: false, ageing: 60, mtu: 1450)])
        #expect(c.externalPorts == [ExternalPortSpec(device: "eth1", settings: ["vlan=10"]), ExternalPortSpec(device: "eth2")])
        #expect(c.declared.segments == c.segments)
    }

    static let mirror = "[[mirror]]\nname = \"m1\"\nsource = [\"a0\", \"b0\"]\nto = \"c0\"\n"
    static let mirrorCases: [(String, String)] = [
        ("[[mirror]]\nname = \"m1\"\nto = \"c0\"\n", "t.toml:1: [[mirror]] needs source"),
        (Self.mirror + "vlan = 4095\n", "t.toml:5: mirror.vlan: VLAN 4095 is out of range 1..4094"),
        (Self.mirror + "direction = \"sideways\"\n", "t.toml:5: mirror.direction: 'sideways' is not in, out or both"),
        ("[[mirror]]\nname = \"m1\"\nsource = [\"a0\"]\nto = \"a0\"\n", "t.toml:4: mirror.to: 'a0' is also a source: a mirror cannot send a port's copies to that port"),
        ("[[mirror]]\nname = \"m/1\"\nsource = \"a0\"\nto = \"c0\"\n", "t.toml:2: mirror.name: 'm/1' is not a mirror name (A-Z a-z 0-9 _ . -, 1 to 32 characters)"),
        ("[[mirror]]\nname = \"m1\"\nsource = [\"a0\", \"a0\"]\nto = \"c0\"\n", "t.toml:3: mirror.source: port 'a0' is listed twice"),
        (Self.mirror + "select = 1\n", "t.toml:5: unknown key 'mirror.select' (known: mirror.name, mirror.source, mirror.direction, mirror.vlan, mirror.to)"),
        (Self.mirror + Self.mirror, "t.toml:6: mirror 'm1' is declared twice (first at line 2)"),
    ]

    @Test("[[mirror]] errors name file and line", arguments: mirrorCases)
    func mirrorErrors(text: String, expected: String) {
        #expect(error(text) == expected)
    }

    @Test("[[mirror]] with every key, one source as a plain string, recorded like the rest")
    func mirrors() throws {
        let c = try loader.parse(Self.mirror + "direction = \"in\"\nvlan = 10\n[[mirror]]\nname = \"m2\"\nsource = \"a0\"\nto = \"d0\"\n", file: "t.toml")
        #expect(c.mirrors == [MirrorSpec(name: "m1", source: ["a0", "b0"], direction: .in, vlan: 10, to: "c0"),
                              MirrorSpec(name: "m2", source: ["a0"], direction: .both, to: "d0")])
        #expect(c.declared.mirrors == c.mirrors)
    }

    @Test("every semantic error is reported, in line order")
    func allErrors() throws {
        let e = try #require(error("[switch]\nmac_aging_seconds = 1\nbogus = true\n[[vm]]\nname = \"a\"\n[[vm.nic]]\ntap = \"a0\"\nmtu = 1\n"))
        #expect(e.split(separator: "\n").map { String($0.prefix(9)) } == ["t.toml:2:", "t.toml:3:", "t.toml:8:"])
    }

    @Test("a missing file is reported with its path")
    func missingFile() {
        #expect(throws: ConfigError.self) { try loader.load(path: "/nonexistent/tapswitchd.toml") }
        do {
            _ = try loader.load(path: "/nonexistent/tapswitchd.toml")
        } catch {
            #expect(error.description == "/nonexistent/tapswitchd.toml:0: No such file or directory")
        }
    }
}
