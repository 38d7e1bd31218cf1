import SwitchCore

/// The data plane throws the one ``SwitchError``; this name stays while the data-plane sources
/// still spell it (they are being reworked; new code writes `SwitchError`).
public typealias DataPlaneError = SwitchError

extension SwitchError {
    /// A data-plane failure without a more specific code: ``SwitchError/Code/system``. Throw sites
    /// whose meaning a caller acts on (exists, not found, bad name) give their code instead.
    public init(_ message: String, vetoingExtension: String? = nil, vetoReason: String? = nil) {
        self.init(vetoingExtension == nil ? .system : .vetoed, message, vetoingExtension: vetoingExtension, vetoReason: vetoReason)
    }

    /// The core's error as it is (kept so call sites written for the old wrapper compile).
    init(_ error: SwitchError) { self = error }
}
