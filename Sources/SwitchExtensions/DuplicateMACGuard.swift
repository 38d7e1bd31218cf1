import SwitchCore

/// Filtering extension: vetoes a NIC whose host-assigned MAC is already used by another NIC on the
/// switch. Two VMs with one MAC make both unreachable in ways that are hard to diagnose; refusing
/// the second at NIC_CREATE names the conflict instead.
///
/// ## Concurrency model
/// Confined to the queue that owns the switch it is enabled on (control callbacks only). Not `Sendable`.
public final class DuplicateMACGuard: SwitchExtension {
    public static let extensionName = "duplicate-mac-guard"
    public let name = DuplicateMACGuard.extensionName
    public let extensionClass = ExtensionClass.filtering
    private var vetoed: UInt64 = 0

    public init() {}

    public func control(_ request: OIDRequest, switch sw: VirtualSwitch) -> ControlVerdict {
        guard request.kind == .nicCreate, let nic = request.nic else { return .accept }
        for port in sw.ports where port.id != request.port.id {
            if let other = sw.nic(of: port.id), other.permanentMAC == nic.permanentMAC || other.currentMAC == nic.permanentMAC {
                vetoed &+= 1
                return .veto(reason: "MAC \(nic.permanentMAC) is already used by port \(port.name)"
                    + (other.vmName.isEmpty ? "" : " of VM \(other.vmName)"))
            }
        }
        return .accept
    }

    public var counters: [ExtensionCounter] { [ExtensionCounter("vetoed", vetoed)] }

    /// It acts only on NIC_CREATE, never on a frame: the fast path hides nothing from it.
    public func offloadPermission(for port: PortID, switch sw: VirtualSwitch) -> OffloadPermission { .allowed }
}
