import ControlProtocol
import Foundation
import Testing

@Suite("Control protocol")
struct ProtocolTests {
    func decode(_ json: String) -> Result<ControlRequest, FieldError> {
        do {
            return .success(try Wire.decodeRequest(Data(json.utf8)))
        } catch {
            return .failure(error)
        }
    }

    func rejection(_ json: String) -> String? {
        if case .failure(let e) = decode(json) { return e.description }
        return nil
    }

    @Test("every request survives an encode/decode round trip")
    func roundTrip() throws {
        let requests: [ControlRequest] = [
            .vmStart(VMSpec(name: "web1", nics: [
                NICSpec(tap: "web1-0", mac: MACAddress("52:54:00:12:34:56"), owner: "libvirt-qemu", group: "kvm", mtu: 9000, type: .emulated, vlan: 10),
                NICSpec(tap: "web1-1"),
            ])),
            .vmStop(name: "web1"), .portAddInternal(InternalPortSpec(name: "h0", mac: MACAddress("02:00:00:00:00:01"), netns: "ns1")),
            .portAddInternal(InternalPortSpec(name: "h1")), .portAddExternal(ExternalPortSpec(device: "eth1")), .portRemove(name: "h0"),
            .portAddExternal(ExternalPortSpec(device: "eth2", settings: ["vlan=10"])),
            .segmentAdd(SegmentSpec(name: "vx100", vlan: 10, vni: 100, local: "192.0.2.1", underlay: "eth0", flood: ["192.0.2.2"],
                                    udpPort: 8472, learning: false, ageing: 30, mtu: 1450)),
            .segmentDel(name: "vx100"), .segmentList,
            .mirrorAdd(MirrorSpec(name: "m1", source: ["web1-0", "web2-0"], direction: .in, vlan: 10, to: "ids0")),
            .mirrorAdd(MirrorSpec(name: "m2", source: ["web1-0"], to: "ids0")), .mirrorDel(name: "m1"), .mirrorList,
            .show, .fdb, .extensions, .events(follow: true), .events(follow: false), .ping, .version,
            .capture(CaptureRequest(ports: ["web1-0", "web2-0"], direction: .in, count: 10, snaplen: 128, drops: true)),
            .capture(CaptureRequest(ports: ["web1-0"])),
        ]
        for r in requests {
            var line = Wire.encodeLine(r)
            #expect(line.last == 0x0A)
            line.removeLast()
            #expect(!line.contains(0x0A), "one request is one line")
            #expect(try Wire.decodeRequest(line) == r)
        }
    }

    @Test("bad requests are rejected naming the field", arguments: [
        ("garbage", "request is not valid JSON"),
        ("", "empty request"),
        ("[1,2]", "request: expected a JSON object"),
        ("{}", "op: missing required field"),
        (#"{"op": 3}"#, "op: expected a string"),
        (#"{"op": "fly"}"#, "op: unknown operation 'fly' (expected one of: \(ControlRequest.allOps.joined(separator: ", ")))"),
        (#"{"op": "show", "x": 1}"#, "x: unknown field (allowed: op)"),
        (#"{"op": "events", "follow": "yes"}"#, "follow: expected true or false"),
        (#"{"op": "vm-stop"}"#, "name: missing required field"),
        (#"{"op": "vm-stop", "name": null}"#, "name: must not be null"),
        (#"{"op": "vm-stop", "name": "a b"}"#, "name: VM name 'a b' contains ' '; allowed are A-Z a-z 0-9 _ . -"),
        (#"{"op": "vm-start", "vm": "web1"}"#, "vm: expected a JSON object"),
        (#"{"op": "vm-start", "vm": {"name": "a"}}"#, "vm.nics: missing required field"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": []}}"#, "vm.nics: a VM needs at least one NIC"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t", "mtu": "big"}]}}"#, "vm.nics[0].mtu: expected an integer"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t", "mtu": 70000}]}}"#, "vm.nics[0].mtu: MTU 70000 is out of range 68..65535"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t"}, {"tap": "u", "vlan": 0}]}}"#, "vm.nics[1].vlan: VLAN 0 is out of range 1..4094"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t", "bogus": 1}]}}"#, "vm.nics[0].bogus: unknown field (allowed: group, mac, mtu, owner, settings, tap, type, vlan)"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t", "mac": "zz:54:00:12:34:56"}]}}"#,
         "vm.nics[0].mac: 'zz:54:00:12:34:56' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t", "type": "virtio"}]}}"#,
         "vm.nics[0].type: 'virtio' is not a NIC type (expected one of: synthetic, emulated)"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "sixteen-chars-xx"}]}}"#,
         "vm.nics[0].tap: interface name 'sixteen-chars-xx' is 16 characters; the limit is 15"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t"}, {"tap": "t"}]}}"#, "vm.nics[1].tap: TAP 't' is used by two NICs of this VM"),
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "t"}], "cpu": 2}}"#, "vm.cpu: unknown field (allowed: name, nics)"),
        (#"{"op": "port-add-internal", "name": "h0", "netns": ""}"#, "netns: namespace name must not be empty"),
        (#"{"op": "port-add-external"}"#, "device: missing required field"),
        (#"{"op": "port-remove", "name": "a/b"}"#, "name: interface name 'a/b' contains '/'; allowed are A-Z a-z 0-9 _ . -"),
        (#"{"op": "port-add-external", "device": "e1", "settings": ["vlan=0"]}"#, "settings: vlan=0: expected a VLAN id 1-4094"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vlan": 10, "vni": 16777216, "local": "10.0.0.1", "underlay": "e1"}}"#,
         "segment.vni: VNI 16777216 is out of range 1..16777215"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vlan": 10, "vni": 1, "local": "10.0.0.300", "underlay": "e1"}}"#,
         "segment.local: '10.0.0.300' is not an IPv4 or IPv6 address"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vlan": 10, "vni": 1, "local": "10.0.0.1", "underlay": "e1", "flood": ["fd00::2"]}}"#,
         "segment.flood: 'fd00::2' is IPv6 but local 10.0.0.1 is not: one underlay family per segment"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vlan": 10, "vni": 1, "local": "10.0.0.1", "underlay": "e1", "flood": ["10.0.0.1"]}}"#,
         "segment.flood: '10.0.0.1' is this host's own VTEP (local)"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vlan": 10, "vni": 1, "local": "239.1.1.1", "underlay": "e1"}}"#,
         "segment.local: '239.1.1.1' is not a unicast address"),
        (#"{"op": "segment-add", "segment": {"name": "vx", "vni": 1, "local": "10.0.0.1", "underlay": "e1"}}"#, "segment.vlan: missing required field"),
        (#"{"op": "segment-del", "name": ""}"#, "name: interface name must not be empty"),
        (#"{"op": "mirror-add", "mirror": {"name": "m", "source": ["a"], "to": "a"}}"#,
         "mirror.to: 'a' is also a source: a mirror cannot send a port's copies to that port"),
        (#"{"op": "mirror-add", "mirror": {"name": "m", "source": ["a"], "to": "b", "vlan": 0}}"#, "mirror.vlan: VLAN 0 is out of range 1..4094"),
        (#"{"op": "mirror-add", "mirror": {"name": "m", "source": ["a"], "to": "b", "direction": "up"}}"#, "mirror.direction: 'up' is not in, out or both"),
        (#"{"op": "mirror-add", "mirror": {"name": "m", "source": [], "to": "b"}}"#, "mirror.source: give at least one source port"),
        (#"{"op": "mirror-add", "mirror": {"name": "m", "to": "b"}}"#, "mirror.source: missing required field"),
        (#"{"op": "mirror-del", "name": "a b"}"#, "name: 'a b' is not a mirror name (A-Z a-z 0-9 _ . -, 1 to 32 characters)"),
        (#"{"op": "capture", "ports": []}"#, "ports: give at least one port"),
        (#"{"op": "capture", "ports": ["a"], "direction": "sideways"}"#, "direction: 'sideways' is not in, out or both"),
        (#"{"op": "capture", "ports": ["a"], "count": 0}"#, "count: 0 is not a positive number of frames"),
        (#"{"op": "capture", "ports": ["a"], "snaplen": 4}"#, "snaplen: 4 is outside 14...262144"),
        (#"{"op": "capture", "ports": ["a", "a"]}"#, "ports: a port is listed twice"),
    ])
    func rejections(json: String, expected: String) {
        #expect(rejection(json) == expected)
    }

    @Test("finding 9: a TAP or port name starting with '-' is rejected, naming the field", arguments: [
        (#"{"op": "vm-start", "vm": {"name": "a", "nics": [{"tap": "-x"}]}}"#,
         "vm.nics[0].tap: interface name '-x' starts with '-', which tools would read as an option"),
        (#"{"op": "port-add-internal", "name": "--help"}"#, "name: interface name '--help' starts with '-', which tools would read as an option"),
        (#"{"op": "port-remove", "name": "-"}"#, "name: interface name '-' starts with '-', which tools would read as an option"),
    ])
    func finding9_leadingDashName(json: String, expected: String) throws {
        #expect(rejection(json) == expected)
        #expect(throws: FieldError.self) { try Validate.interfaceName("-vm1", field: "f") }
        // A dash inside the name stays fine.
        #expect(try Validate.interfaceName("vm1-0", field: "f") == "vm1-0")
    }

    @Test("oversized and non-UTF-8 requests are rejected")
    func limits() {
        let big = Data(repeating: 0x20, count: Wire.maxRequestBytes)
        #expect(throws: FieldError.self) { try Wire.decodeRequest(big) }
        #expect(throws: FieldError.self) { try Wire.decodeRequest(Data([0x7B, 0xFF, 0xFE, 0x7D])) }
    }

    @Test("MAC addresses parse, print and classify")
    func macs() throws {
        let m = try #require(MACAddress("52:54:00:AB:cd:0F"))
        #expect(m.description == "52:54:00:ab:cd:0f")
        #expect(m.bytes == [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f])
        #expect(MACAddress("52:54:00:ab:cd") == nil)
        #expect(MACAddress("52:54:00:ab:cd:0f:00") == nil)
        #expect(MACAddress("5254.00ab.cd0f") == nil)
        #expect(MACAddress("ff:ff:ff:ff:ff:ff")?.isMulticast == true)
        #expect(throws: FieldError(field: "f", message: "'00:00:00:00:00:00' is the all-zero address")) {
            try Validate.mac("00:00:00:00:00:00", field: "f")
        }
    }

    @Test("principals: names and ids")
    func principals() throws {
        #expect(try Validate.principal("libvirt-qemu", field: "o") == "libvirt-qemu")
        #expect(try Validate.principal("64055", field: "o") == "64055")
        #expect(try Validate.principal("machine$", field: "o") == "machine$")
        #expect(throws: FieldError.self) { try Validate.principal("-x", field: "o") }
        #expect(throws: FieldError.self) { try Validate.principal("4294967295", field: "o") }
        #expect(throws: FieldError.self) { try Validate.principal("", field: "o") }
    }

    @Test("responses decode leniently (a newer daemon may add fields)")
    func lenientResponse() throws {
        let r = try Wire.decodeResponse(Data(#"{"ok":false,"error":"no","future":1}"#.utf8))
        #expect(r.ok == false && r.error == "no" && r.code == nil)
        // A daemon older than the code field: the client still gets an error, coded `system`.
        #expect(r.switchError == SwitchError(.system, "no"))
    }
}

@Suite("vm start NIC options")
struct NICArgumentsTests {
    @Test("flags apply to the most recent --nic; comma form is equivalent")
    func rule() throws {
        let a = try NICArguments.parse(["--nic", "a0", "--mac", "52:54:00:00:00:01", "--owner", "qemu", "--mtu=9000",
                                        "--nic=a1", "--type", "emulated", "--vlan", "20", "--group", "kvm"])
        let b = try NICArguments.parse(["--nic", "a0,mac=52:54:00:00:00:01,owner=qemu,mtu=9000", "--nic", "a1,type=emulated,vlan=20,group=kvm"])
        #expect(a == b)
        #expect(a == [
            NICSpec(tap: "a0", mac: MACAddress("52:54:00:00:00:01"), owner: "qemu", mtu: 9000),
            NICSpec(tap: "a1", group: "kvm", type: .emulated, vlan: 20),
        ])
        // Mixed: comma form plus a following flag.
        #expect(try NICArguments.parse(["--nic", "a0,vlan=5", "--mtu", "1400"]) == [NICSpec(tap: "a0", mtu: 1400, vlan: 5)])
    }

    @Test("bad NIC options name the flag", arguments: [
        ([String](), "--nic: at least one --nic is required"),
        (["--mac", "52:54:00:00:00:01", "--nic", "a"], "--mac: must follow a --nic (per-NIC flags apply to the most recent --nic)"),
        (["--nic"], "--nic: missing value"),
        (["--nic", "a", "--mtu"], "--mtu: missing value"),
        (["--nic", "a", "--mtu", "--vlan", "3"], "--mtu: missing value"),
        (["--nic", "a", "--mtu", "nine"], "--mtu: 'nine' is not an integer"),
        (["--nic", "a", "--mtu", "67"], "--mtu: MTU 67 is out of range 68..65535"),
        (["--nic", "a", "--vlan", "4095"], "--vlan: VLAN 4095 is out of range 1..4094"),
        (["--nic", "a", "--type", "virtio"], "--type: 'virtio' is not a NIC type (expected one of: synthetic, emulated)"),
        (["--nic", "a", "--mac", "1:2:3:4:5:6"], "--mac: '1:2:3:4:5:6' is not a MAC address (expected six hex pairs like 52:54:00:12:34:56)"),
        (["--nic", "a,mtu=1500", "--mtu", "9000"], "--mtu: given twice for NIC 'a'"),
        (["--nic", "a,speed=10"], "--nic a,speed=10: unknown key 'speed' (keys: mac, owner, group, mtu, type, vlan; port settings: vlan-mode, allowed-vlans, native-vlan, mac-spoof-guard, allowed-macs, ip-guard, allowed-ips, dhcp-snooping, dhcp-guard, router-guard, isolated, pvlan, mac-limit, acl-default-in, acl-default-out, storm-broadcast, storm-multicast, storm-unknown, ingress-rate, ingress-burst, ingress-frame-rate, ingress-frame-burst, egress-rate, egress-burst, egress-frame-rate, egress-frame-burst)"),
        (["--nic", "a,mtu"], "--nic a,mtu: 'mtu' is not key=value (keys: mac, owner, group, mtu, type, vlan; port settings: vlan-mode, allowed-vlans, native-vlan, mac-spoof-guard, allowed-macs, ip-guard, allowed-ips, dhcp-snooping, dhcp-guard, router-guard, isolated, pvlan, mac-limit, acl-default-in, acl-default-out, storm-broadcast, storm-multicast, storm-unknown, ingress-rate, ingress-burst, ingress-frame-rate, ingress-frame-burst, egress-rate, egress-burst, egress-frame-rate, egress-frame-burst)"),
        (["--nic", "a,vlan=1,vlan=2"], "--nic a,vlan=1,vlan=2: key 'vlan' given twice"),
        (["--nic", "a,mtu=99999"], "--nic a,mtu=99999: MTU 99999 is out of range 68..65535"),
        (["--nic", "much-too-long-name"], "--nic: interface name 'much-too-long-name' is 18 characters; the limit is 15"),
        (["--nic", "a", "--speed", "10"], "--speed: unknown option for 'vm start' (expected --nic or one of: --mac, --owner, --group, --mtu, --type, --vlan)"),
        (["--nic", "a", "extra"], "vm start: unexpected argument 'extra' (the VM name comes first; NICs are given with --nic)"),
    ])
    func errors(tokens: [String], expected: String) {
        do {
            _ = try NICArguments.parse(tokens)
            Issue.record("accepted \(tokens)")
        } catch {
            #expect(error.description == expected)
        }
    }
}
