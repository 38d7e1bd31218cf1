import SwitchCore

/// Filtering extension: vetoes a NIC whose host-assigned MAC is already used by another NIC on the
/// switch. Two VMs with one MAC make both unreachable in ways that are hard to diagnose; refusing
/// the second at NIC_CREATE names the conflict instead.
final class DuplicateMACGuard: SwitchExtension {
    let name = "duplicate-mac-guard"
    let extensionClass = ExtensionClass.filtering

    func control(_ request: ControlRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        guard request.kind == .nicCreate, let nic = request.nic else { return .accept }
        for port in sw.ports where port.id != request.port.id {
            if let other = sw.nic(of: port.id), other.permanentMAC == nic.permanentMAC || other.currentMAC == nic.permanentMAC {
                return .veto(reason: "MAC \(nic.permanentMAC) is already used by port \(port.name)"
                    + (other.vmName.isEmpty ? "" : " of VM \(other.vmName)"))
            }
        }
        return .accept
    }
}

enum BuiltinExtensions {
    struct Entry: Sendable {
        let name: String
        let extensionClass: SwitchCore.ExtensionClass
        let summary: String
        let make: @Sendable () -> any SwitchExtension
    }

    static let all: [Entry] = [
        Entry(name: "duplicate-mac-guard", extensionClass: .filtering,
              summary: "vetoes a NIC whose MAC is already used on another port") { DuplicateMACGuard() },
    ]
}
