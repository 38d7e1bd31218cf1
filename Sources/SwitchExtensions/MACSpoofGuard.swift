import SwitchCore

/// MAC spoofing guard (Hyper-V's `-MacAddressSpoofing Off`), on by default for VM ports: a frame
/// whose source MAC is neither its NIC's MAC (permanent or current) nor one of the port's
/// `allowed-macs` is dropped on ingress, before the switch learns from it, so it never moves a
/// learned address. A port with the guard on and no NIC yet sends nothing. It vetoes an
/// `allowed-macs` entry that is another port's NIC MAC.
public final class MACSpoofGuard: PortPolicyExtension {
    public static let extensionName = "mac-spoof-guard"
    /// Per port: the NIC's two MACs plus the allowed ones.
    static let stride = 2 + SecurityPolicy.maxAllowedMACs

    let vmDefault: Bool
    private var enabled: UnsafeMutablePointer<Bool>?
    private var count: UnsafeMutablePointer<UInt8>?
    private var macs: UnsafeMutablePointer<UInt64>?
    private var reason = DropReason.runtFrame
    private var dropped: UInt64 = 0
    private var guarded = 0

    public init(settings: ExtensionSettings = ExtensionSettings()) throws(SwitchError) {
        try settings.check(extension: Self.extensionName, known: ["vm-default"])
        vmDefault = try settings.flag("vm-default", extension: Self.extensionName, default: true)
        super.init(name: Self.extensionName, extensionClass: .filtering)
    }

    deinit { free() }

    private func free() {
        enabled?.deallocate(); count?.deallocate(); macs?.deallocate()
        enabled = nil; count = nil; macs = nil
    }

    override func prepare(_ sw: VirtualSwitch, capacity: Int) {
        free()
        enabled = .allocate(capacity: capacity)
        enabled?.initialize(repeating: false, count: capacity)
        count = .allocate(capacity: capacity)
        count?.initialize(repeating: 0, count: capacity)
        macs = .allocate(capacity: capacity * Self.stride)
        macs?.initialize(repeating: 0, count: capacity * Self.stride)
        reason = sw.registerDropReason("MAC spoofing: source MAC is not the port's (mac-spoof-guard)")
        guarded = 0
    }

    override func portChanged(_ index: Int, _ port: TrackedPort?, _ sw: VirtualSwitch) {
        guard let enabled, let count, let macs else { return }
        let on = port.map { $0.security.macSpoofGuard ?? ($0.isVM && vmDefault) } ?? false
        if on != enabled[index] { guarded += on ? 1 : -1 }
        enabled[index] = on
        var n = 0
        if let port {
            var list: [MACAddress] = []
            if let nic = port.nic { list += [nic.permanentMAC, nic.currentMAC] }
            list += port.security.allowedMACs
            for m in list.prefix(Self.stride) {
                macs[index * Self.stride + n] = m.rawValue
                n += 1
            }
        }
        count[index] = UInt8(n)
    }

    /// Vetoes `allowed-macs` that name another port's NIC MAC: allowing it would let this port
    /// impersonate that NIC, which is what the guard is for.
    override func check(_ policy: SecurityPolicy, for port: PortParameters, in sw: VirtualSwitch) -> String? {
        for m in policy.allowedMACs {
            for other in sw.ports where other.id != port.id {
                if let nic = sw.nic(of: other.id), nic.permanentMAC == m || nic.currentMAC == m {
                    return "allowed-macs: \(m) is the MAC of port \(other.name)"
                }
            }
        }
        return nil
    }

    override public func ingress(_ context: inout IngressContext) {
        guard guarded > 0, let enabled, let count, let macs else { return }
        let batch = context.batch
        for i in context.frames where context.isLive(i) {
            let s = batch.sourcePortIndex(i)
            guard s >= 0, enabled[s] else { continue }
            let source = batch.parsed(i).source.rawValue
            let base = macs + s * Self.stride
            var ok = false
            for k in 0..<Int(count[s]) where base[k] == source {
                ok = true
                break
            }
            if !ok {
                context.drop(i, reason: reason)
                dropped &+= 1
            }
        }
    }

    override public var counters: [ExtensionCounter] {
        [ExtensionCounter("guarded-ports", UInt64(guarded)), ExtensionCounter("dropped", dropped)]
    }
}
