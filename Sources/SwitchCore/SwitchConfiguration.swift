/// Switch-wide settings.
public struct SwitchConfiguration: Sendable, Equatable {
    public var name: String
    /// Most ports the switch can hold (sizes preallocated tables).
    public var maxPorts: Int
    /// Most frames in one batch (the packet loop's I/O budget per wake-up).
    public var batchCapacity: Int
    /// Total MAC table entries.
    public var macTableSize: Int
    /// MAC entries one port may own.
    public var macLimitPerPort: Int
    /// Seconds after which an address not seen again is forgotten.
    public var macAgingSeconds: UInt64
    public var unknownUnicast: UnknownUnicastPolicy
    /// Most fast-path (offload) entries; the data plane sizes its map to match.
    public var maxOffloadedFlows: Int = 16_384

    public init(name: String = "tapswitch0", maxPorts: Int = 1024, batchCapacity: Int = 64, macTableSize: Int = 8192,
                macLimitPerPort: Int = 1024, macAgingSeconds: UInt64 = 300, unknownUnicast: UnknownUnicastPolicy = .flood) {
        self.name = name
        self.maxPorts = maxPorts
        self.batchCapacity = batchCapacity
        self.macTableSize = macTableSize
        self.macLimitPerPort = macLimitPerPort
        self.macAgingSeconds = macAgingSeconds
        self.unknownUnicast = unknownUnicast
    }
}
