/// Control-path record of a port (one per port; not touched per frame).
final class PortRecord {
    var params: PortParameters
    var nic: NICParameters?
    let slot: UInt16
    var properties: [PortProperty] = []
    /// ReferenceSwitchPort count: PORT_DELETE waits for zero.
    var portReferences = 0
    /// ReferenceSwitchNic count plus in-flight (pended) frames: NIC_DELETE waits for zero.
    var nicReferences = 0
    /// Who holds the ReferenceSwitchNic references among ``nicReferences`` (extension name -> count);
    /// the rest are pended frames. Diagnostics only: names the holder of a removal that waits.
    var nicHolders: [String: Int] = [:]
    var nicDeleteDeferred = false
    var portDeleteDeferred = false
    /// Set by ``VirtualSwitch/removePort(_:isRestore:completion:)``: carry on through the stop
    /// sequence whenever references drain.
    var removing = false
    var removalIsRestore = false
    var removalCompletion: (() -> Void)?
    /// Drop counters indexed by `reason.code * 2 + direction`.
    var drops: [UInt64] = []
    /// A NIC_DISCONNECT the forwarding extension pended (it holds one NIC reference while pended).
    var pendedDisconnect: PendedDisconnect?

    init(params: PortParameters, slot: UInt16) {
        self.params = params
        self.slot = slot
    }
}

/// Per-frame facts about a port, kept in flat storage indexed by the port's dense slot so the
/// data path reads them without touching a class instance.
struct SlotInfo {
    var port: PortID = .switchItself
    var inUse = false
    /// NIC created or connected: frames from it are admitted.
    var acceptsIngress = false
    /// NIC connected: frames may be delivered to it.
    var connected = false
    var isUplink = false
    /// ``untagged``, ``access`` or ``trunk``.
    var vlanMode: UInt8 = SlotInfo.untagged
    var accessVLAN: VLANID = 0
    /// Trunk native VLAN; `noVLAN` when untagged frames are dropped.
    var nativeVLAN: VLANID = SlotInfo.noVLAN
    var framesIn: UInt64 = 0
    var bytesIn: UInt64 = 0
    var framesOut: UInt64 = 0
    var bytesOut: UInt64 = 0

    static let noVLAN: VLANID = 0xFFFF
    static let untagged: UInt8 = 0
    static let access: UInt8 = 1
    static let trunk: UInt8 = 2
}

/// A NIC_DISCONNECT waiting for the forwarding extension to flush what it holds for the NIC.
final class PendedDisconnect {
    let request: OIDRequest
    let extensionName: String
    var wasConnected = false
    /// The extension completed it; it finishes once the frames it resumed have been processed.
    var completing = false

    init(request: OIDRequest, extensionName: String) {
        self.request = request
        self.extensionName = extensionName
    }

    var holder: String { "\(extensionName) (NIC_DISCONNECT pended)" }
}

/// An extension's timer (see ``VirtualSwitch/scheduleTimer(for:after:every:tag:)``).
struct TimerEntry {
    let id: UInt64
    let owner: ObjectIdentifier
    var deadline: UInt64
    let interval: UInt64
    let tag: Int
}
