import ControlProtocol
import Foundation
import LibvirtHook
import Testing

/// A domain XML as libvirt writes it to a hook: `interfaces` inside <devices>, `metadata` inside <metadata>.
func domainXML(name: String = "web1", interfaces: String, metadata: String = "", seclabel: String = "") -> Data {
    Data("""
    <domain type='kvm' id='3'>
      <name>\(name)</name>
      <uuid>0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0</uuid>
      <metadata>
        <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo>
        \(metadata)
      </metadata>
      <memory unit='KiB'>262144</memory>
      <devices>
        <emulator>/usr/bin/qemu-system-x86_64</emulator>
        <interface type='network'><mac address='52:54:00:00:00:99'/><source network='default'/><model type='virtio'/></interface>
        \(interfaces)
      </devices>
      \(seclabel)
    </domain>
    """.utf8)
}

func ethernet(_ dev: String, mac: String = "52:54:00:12:34:56", managed: String = "no", model: String = "virtio", extra: String = "") -> String {
    "<interface type='ethernet'><mac address='\(mac)'/><target dev='\(dev)' managed='\(managed)'/><model type='\(model)'/>\(extra)</interface>"
}

let tsw = "xmlns:tapswitch='\(LibvirtDomain.namespace)'"

@Suite("libvirt hook: which interfaces, which NIC options")
struct HookPlanTests {
    @Test("An interface whose TAP starts with tsw- is owned; other ethernet and network interfaces are not")
    func prefixRule() throws {
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("tsw-web1") + ethernet("vnet7", mac: "52:54:00:00:00:07")))
        #expect(d.name == "web1")
        let nics = try HookPlan.ownedNICs(of: d, defaultOwner: "libvirt-qemu")
        #expect(nics.map(\.dev) == ["tsw-web1"])
        #expect(nics[0].reason == "prefix")
        #expect(nics[0].arguments == ["--nic", "tsw-web1", "--mac", "52:54:00:12:34:56", "--owner", "libvirt-qemu"])
    }

    @Test("A domain with no owned interface gives nothing (the hook does nothing)")
    func notOurs() throws {
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("web1-0")))
        #expect(try HookPlan.ownedNICs(of: d, defaultOwner: nil).isEmpty)
    }

    @Test("Metadata owns any TAP name and carries libvirt's VLAN syntax: access VLAN")
    func metadataAccess() throws {
        let meta = "<tapswitch:switch \(tsw)><tapswitch:interface dev='web1-0'><tapswitch:vlan><tapswitch:tag id='10'/></tapswitch:vlan></tapswitch:interface></tapswitch:switch>"
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("web1-0"), metadata: meta))
        let nics = try HookPlan.ownedNICs(of: d, defaultOwner: "libvirt-qemu")
        #expect(nics.count == 1)
        #expect(nics[0].reason == "metadata")
        #expect(nics[0].arguments == ["--nic", "web1-0,vlan=10", "--mac", "52:54:00:12:34:56", "--owner", "libvirt-qemu"])
        // The options are exactly what `vm start` parses.
        let parsed = try NICArguments.parse(nics[0].arguments)
        #expect(parsed.count == 1)
        #expect(parsed.first?.tap == "web1-0")
        #expect(parsed.first?.mac == MACAddress("52:54:00:12:34:56"))
        #expect(parsed.first?.owner == "libvirt-qemu")
        #expect(try parsed.first?.portSettings().vlan == .access(10))
    }

    @Test("Metadata with a default namespace (as libvirt may re-serialise it) is read the same")
    func defaultNamespace() throws {
        let meta = "<switch xmlns='\(LibvirtDomain.namespace)'><interface dev='web1-0' owner='qemu2'><vlan><tag id='20'/></vlan></interface></switch>"
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("web1-0"), metadata: meta))
        let nics = try HookPlan.ownedNICs(of: d, defaultOwner: "libvirt-qemu")
        #expect(nics[0].arguments == ["--nic", "web1-0,vlan=20", "--mac", "52:54:00:12:34:56", "--owner", "qemu2"])
    }

    @Test("Trunk with a native untagged VLAN and an isolated port map to the policy NIC options")
    func trunkAndIsolated() throws {
        let meta = """
        <tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-r1'>
          <tapswitch:vlan trunk='yes'><tapswitch:tag id='10'/><tapswitch:tag id='20' nativeMode='untagged'/></tapswitch:vlan>
          <tapswitch:port isolated='yes'/>
        </tapswitch:interface></tapswitch:switch>
        """
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("tsw-r1", model: "e1000"), metadata: meta))
        let nics = try HookPlan.ownedNICs(of: d, defaultOwner: nil)
        #expect(nics[0].arguments == ["--nic", "tsw-r1,vlan-mode=trunk,allowed-vlans=10,20,native-vlan=20,isolated=on",
                                      "--mac", "52:54:00:12:34:56", "--type", "emulated"])
        // `vm start` takes them: a trunk of 10 and 20 with 20 untagged, isolated.
        let parsed = try NICArguments.parse(nics[0].arguments)
        let settings = try #require(parsed.first).portSettings()
        #expect(settings.vlan == .trunk(allowed: [10, 20], native: 20))
        #expect(settings.security.pvlan == .isolated)
        #expect(parsed.first?.type == .emulated)
    }

    @Test("<vlan> on the interface itself is mapped too (libvirt 9 refuses it at start, a later libvirt may not)")
    func inlineVLAN() throws {
        let d = try LibvirtDomain.parse(domainXML(interfaces: ethernet("tsw-a", extra: "<vlan><tag id='30'/></vlan>")))
        #expect(try HookPlan.ownedNICs(of: d, defaultOwner: nil)[0].arguments.prefix(2) == ["--nic", "tsw-a,vlan=30"])
    }

    @Test("Bad input is refused with the interface and what is wrong", arguments: [
        (ethernet("tsw-a", managed: "yes"), "", "managed='no'"),
        ("<interface type='ethernet'><target dev='tsw-a' managed='no'/></interface>", "", "no <mac address>"),
        (ethernet("tsw-a"), "<tapswitch:switch \(tsw)><tapswitch:interface dev='gone0'/></tapswitch:switch>", "'gone0'"),
        (ethernet("tsw-a"), "<tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-a'><tapswitch:vlan><tapswitch:tag id='10'/><tapswitch:tag id='20'/></tapswitch:vlan><tapswitch:vlan/></tapswitch:interface></tapswitch:switch>", "more than one <vlan>"),
        (ethernet("tsw-a"), "<tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-a'><tapswitch:vlan trunk='yes'><tapswitch:tag id='10' nativeMode='tagged'/></tapswitch:vlan></tapswitch:interface></tapswitch:switch>", "nativeMode='tagged'"),
        (ethernet("tsw-a"), "<tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-a'><tapswitch:port isolated='maybe'/></tapswitch:interface></tapswitch:switch>", "isolated='maybe'"),
        (ethernet("tsw-a", extra: "<vlan><tag id='5'/></vlan>"), "<tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-a'><tapswitch:vlan><tapswitch:tag id='6'/></tapswitch:vlan></tapswitch:interface></tapswitch:switch>", "both on the interface and in the tapswitch metadata"),
    ])
    func refused(interfaces: String, metadata: String, expected: String) throws {
        let error = #expect(throws: HookError.self) {
            try HookPlan.ownedNICs(of: LibvirtDomain.parse(domainXML(interfaces: interfaces, metadata: metadata)), defaultOwner: nil)
        }
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        #expect(error?.message.contains("tsw-a") == true || error?.message.contains("gone0") == true || interfaces.contains("<mac") == false)
    }

    @Test("A VLAN id out of range passes through and `vm start` parsing names the option")
    func rangeCheckedByVMStart() throws {
        let meta = "<tapswitch:switch \(tsw)><tapswitch:interface dev='tsw-a'><tapswitch:vlan><tapswitch:tag id='4095'/></tapswitch:vlan></tapswitch:interface></tapswitch:switch>"
        let nics = try HookPlan.ownedNICs(of: LibvirtDomain.parse(domainXML(interfaces: ethernet("tsw-a"), metadata: meta)), defaultOwner: nil)
        let error = #expect(throws: FieldError.self) { try NICArguments.parse(nics[0].arguments) }
        #expect(error?.field == "--nic tsw-a,vlan=4095")
    }

    @Test("Malformed XML and a document without <domain><name> are refused")
    func malformed() {
        #expect(throws: HookError.self) { try LibvirtDomain.parse(Data("<domain><name>x</name>".utf8)) }
        #expect(throws: HookError.self) { try LibvirtDomain.parse(Data("<network><name>x</name></network>".utf8)) }
        #expect(throws: HookError.self) { try LibvirtDomain.parse(Data("<domain><devices/></domain>".utf8)) }
    }

    @Test("QEMU's user: the DAC label first, then qemu.conf's last uncommented user, numeric ids without '+'")
    func qemuUser() throws {
        let conf = """
        #user = "libvirt-qemu"
        user = "qemu1"
          user="+107"   # numeric
        group = "kvm"
        """
        #expect(QEMUUser.resolve(dacLabel: nil, qemuConf: conf) == "107")
        #expect(QEMUUser.resolve(dacLabel: "+64055:+994", qemuConf: conf) == "64055")
        #expect(QEMUUser.resolve(dacLabel: "libvirt-qemu:kvm", qemuConf: nil) == "libvirt-qemu")
        #expect(QEMUUser.resolve(dacLabel: nil, qemuConf: "#user = \"x\"\n") == nil)
        let d = try LibvirtDomain.parse(domainXML(interfaces: "", seclabel: "<seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+108</label><imagelabel>+64055:+108</imagelabel></seclabel>"))
        #expect(d.dacLabel == "+64055:+108")
    }
}

@Suite("libvirt hook: the shipped example")
struct ExampleTests {
    @Test("examples/libvirt-interface.xml gives web1-0 on access VLAN 10 with its MAC")
    func example() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/libvirt-interface.xml")
        let nics = try HookPlan.ownedNICs(of: LibvirtDomain.parse(Data(contentsOf: url)), defaultOwner: "libvirt-qemu")
        #expect(nics.map(\.arguments) == [["--nic", "web1-0,vlan=10", "--mac", "52:54:00:12:34:56", "--owner", "libvirt-qemu"]])
    }
}
