import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// What the hook needs from a libvirt domain XML (the document libvirt writes to a hook's stdin).
public struct LibvirtDomain: Sendable, Equatable {
    public var name: String
    /// Every `<interface type='ethernet'>`, in document order.
    public var interfaces: [EthernetInterface]
    /// The domain's `<seclabel model='dac'><label>` (`USER:GROUP`, `+UID:+GID`), when libvirt has one.
    public var dacLabel: String?
    /// `<interface>` entries of the tapswitch `<metadata>` element, by target device.
    public var settings: [String: PortSettingsXML]
    /// The tapswitch `<metadata>` element is present (even if empty).
    public var hasTapswitchMetadata: Bool

    public init(name: String, interfaces: [EthernetInterface] = [], dacLabel: String? = nil,
                settings: [String: PortSettingsXML] = [:], hasTapswitchMetadata: Bool = false) {
        self.name = name
        self.interfaces = interfaces
        self.dacLabel = dacLabel
        self.settings = settings
        self.hasTapswitchMetadata = hasTapswitchMetadata
    }
}

/// One `<interface type='ethernet'>`.
public struct EthernetInterface: Sendable, Equatable {
    /// `<target dev='...'/>`; nil when libvirt is to pick a name.
    public var dev: String?
    /// `<target managed='no'/>`: libvirt opens the existing TAP instead of creating it.
    public var unmanaged: Bool
    /// `<mac address='...'/>`.
    public var mac: String?
    /// `<model type='...'/>` (virtio, e1000, ...).
    public var model: String?
    /// `<vlan>` and `<port isolated>` written on the interface itself (libvirt 9 refuses both on
    /// type='ethernet' when the domain starts, so in practice they come from the metadata).
    public var inline: PortSettingsXML

    public init(dev: String?, unmanaged: Bool, mac: String?, model: String? = nil, inline: PortSettingsXML = PortSettingsXML()) {
        self.dev = dev
        self.unmanaged = unmanaged
        self.mac = mac
        self.model = model
        self.inline = inline
    }
}

/// Port settings in libvirt's own syntax: `<vlan [trunk='yes']><tag id='N' [nativeMode='untagged|tagged']/>...</vlan>`
/// and `<port isolated='yes|no'/>`, plus tapswitch's `owner` attribute.
public struct PortSettingsXML: Sendable, Equatable {
    public struct Tag: Sendable, Equatable {
        public var id: String
        public var nativeMode: String?
        public init(id: String, nativeMode: String? = nil) {
            self.id = id
            self.nativeMode = nativeMode
        }
    }
    /// nil: no `<vlan>` element.
    public var vlanTags: [Tag]?
    /// `<vlan trunk='...'>` as written.
    public var vlanTrunk: String?
    /// `<port isolated='...'/>` as written.
    public var isolated: String?
    /// `<interface owner='...'>` (metadata only): the user QEMU runs as, overriding the hook's default.
    public var owner: String?

    public init(vlanTags: [Tag]? = nil, vlanTrunk: String? = nil, isolated: String? = nil, owner: String? = nil) {
        self.vlanTags = vlanTags
        self.vlanTrunk = vlanTrunk
        self.isolated = isolated
        self.owner = owner
    }

    public var isEmpty: Bool { vlanTags == nil && isolated == nil && owner == nil }
}

/// A domain XML the hook cannot use, with where and what.
public struct HookError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension LibvirtDomain {
    /// The XML namespace of tapswitch's `<metadata>` element.
    public static let namespace = "urn:tapswitch:libvirt:1"

    /// Parses the domain XML. Unknown elements are ignored (libvirt's schema is large and grows);
    /// what the hook uses must be well-formed, else the error names the element.
    public static func parse(_ data: Data) throws(HookError) -> LibvirtDomain {
        // XMLDocument recovers from some errors (an unclosed element): check with the SAX parser first.
        let checker = XMLParser(data: data)
        let balance = ElementBalance()
        checker.delegate = balance
        guard checker.parse(), balance.depth == 0, balance.closed > 0 else {
            throw HookError("domain XML is not well-formed (line \(checker.lineNumber): \(checker.parserError.map { "\($0.localizedDescription)" } ?? "unclosed element"))")
        }
        let document: XMLDocument
        do {
            document = try XMLDocument(data: data, options: [])
        } catch {
            throw HookError("domain XML is not well-formed: \(error.localizedDescription)")
        }
        guard let root = document.rootElement(), root.localName == "domain" else {
            throw HookError("domain XML: the root element is not <domain>")
        }
        guard let name = child(root, "name")?.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty else {
            throw HookError("domain XML: <domain> has no <name>")
        }
        var domain = LibvirtDomain(name: name)
        for seclabel in children(root, "seclabel") where attribute(seclabel, "model") == "dac" {
            if let label = child(seclabel, "label")?.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines), !label.isEmpty {
                domain.dacLabel = label
            }
        }
        if let devices = child(root, "devices") {
            for element in children(devices, "interface") where attribute(element, "type") == "ethernet" {
                let target = child(element, "target")
                domain.interfaces.append(EthernetInterface(
                    dev: target.flatMap { attribute($0, "dev") },
                    unmanaged: target.flatMap { attribute($0, "managed") } == "no",
                    mac: child(element, "mac").flatMap { attribute($0, "address") },
                    model: child(element, "model").flatMap { attribute($0, "type") },
                    inline: try settings(of: element, namespace: nil, what: "interface")))
            }
        }
        if let metadata = child(root, "metadata") {
            for top in metadata.children?.compactMap({ $0 as? XMLElement }) ?? []
            where top.uri == namespace && top.localName == "switch" {
                domain.hasTapswitchMetadata = true
                for element in children(top, "interface", namespace: namespace) {
                    guard let dev = attribute(element, "dev"), !dev.isEmpty else {
                        throw HookError("tapswitch metadata: <interface> needs dev='TAP' (the interface's <target dev>)")
                    }
                    if domain.settings[dev] != nil {
                        throw HookError("tapswitch metadata: interface '\(dev)' is listed twice")
                    }
                    var s = try settings(of: element, namespace: namespace, what: "metadata interface '\(dev)'")
                    s.owner = attribute(element, "owner")
                    domain.settings[dev] = s
                }
            }
        }
        return domain
    }

    private static func settings(of element: XMLElement, namespace: String?, what: String) throws(HookError) -> PortSettingsXML {
        var s = PortSettingsXML()
        let vlans = children(element, "vlan", namespace: namespace)
        if vlans.count > 1 { throw HookError("\(what): more than one <vlan>") }
        if let vlan = vlans.first {
            s.vlanTrunk = attribute(vlan, "trunk")
            s.vlanTags = children(vlan, "tag", namespace: namespace).map {
                PortSettingsXML.Tag(id: attribute($0, "id") ?? "", nativeMode: attribute($0, "nativeMode"))
            }
        }
        if let port = children(element, "port", namespace: namespace).first {
            s.isolated = attribute(port, "isolated")
        }
        return s
    }

    private static func children(_ element: XMLElement, _ name: String, namespace: String? = nil) -> [XMLElement] {
        (element.children ?? []).compactMap { $0 as? XMLElement }.filter {
            $0.localName == name && (namespace == nil ? ($0.uri ?? "").isEmpty : $0.uri == namespace)
        }
    }

    private static func child(_ element: XMLElement, _ name: String) -> XMLElement? {
        children(element, name).first
    }

    /// An unprefixed attribute (looked up by local name: FoundationXML's `attribute(forName:)`
    /// misses them on elements in a default namespace).
    private static func attribute(_ element: XMLElement, _ name: String) -> String? {
        element.attributes?.first { ($0.localName ?? $0.name) == name }?.stringValue
    }
}

/// Counts open elements while the SAX parser runs.
private final class ElementBalance: NSObject, XMLParserDelegate {
    var depth = 0
    var closed = 0

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
        depth += 1
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        depth -= 1
        closed += 1
    }
}
