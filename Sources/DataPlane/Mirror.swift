import PacketCapture
import SwitchCore

extension SwitchRuntime {
    /// Makes the switch's mirrors exactly `definitions`: enables the port-mirror extension (top of
    /// the stack) with the first and disables it with the last, so mirroring costs nothing when
    /// there is none. Every port `mustExist` names (a new mirror's) must be a port now, else nothing
    /// changes and the error names it. When this returns, the sources' flows are off the fast path
    /// (and those of ports no longer mirrored may return to it).
    public func setMirrors(_ definitions: [MirrorDefinition], mustExist: MirrorDefinition? = nil) async throws(SwitchError) -> [MirrorStatus] {
        try await onQueueThrowing { () throws(SwitchError) -> [MirrorStatus] in
            if let m = mustExist {
                for name in m.sources where self.sw.port(named: name) == nil {
                    throw SwitchError(.notFound, "source: no port named '\(name)'")
                }
                if self.sw.port(named: m.destination) == nil { throw SwitchError(.notFound, "to: no port named '\(m.destination)'") }
            }
            if definitions.isEmpty {
                if let ext = self.mirror {
                    ext.set([], on: self.sw)
                    try? self.sw.disable(ext.name)
                    self.mirror = nil
                }
                return []
            }
            let ext: PortMirrorExtension
            if let m = self.mirror {
                ext = m
            } else {
                ext = PortMirrorExtension()
                try self.sw.enable(ext, position: 0)
                self.mirror = ext
            }
            ext.set(definitions, on: self.sw)
            return ext.statuses
        }
    }

    /// Every mirror with its state and counters.
    public func mirrorStatuses() async -> [MirrorStatus] {
        await onQueueAsync { self.mirror?.statuses ?? [] }
    }
}
