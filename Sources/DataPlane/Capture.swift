import PacketCapture
import SwitchCore

extension SwitchRuntime {
    /// Starts a capture of `ports` (names) in `directions`: enables the capture extension at the
    /// top of the stack if no session runs yet, and returns the session whose ring the caller
    /// drains. Unknown ports are refused, naming them. When it returns, those ports' fast-path
    /// entries are gone (their frames take the slow path, where the capture sees them); other
    /// ports keep theirs.
    public func startCapture(ports names: [String], inbound: Bool, outbound: Bool, snaplen: Int, includeDrops: Bool,
                             ringBytes: Int = 4 << 20) async throws(SwitchError) -> CaptureSession {
        try await onQueueThrowing { () throws(SwitchError) -> CaptureSession in
            var interfaces: [CaptureSession.Interface] = []
            for name in names {
                guard let p = self.sw.port(named: name) else { throw SwitchError(.notFound, "no port named '\(name)'") }
                if inbound { interfaces.append(.init(port: p.id, portName: name, direction: .inbound)) }
                if outbound { interfaces.append(.init(port: p.id, portName: name, direction: .outbound)) }
            }
            let session = CaptureSession(interfaces: interfaces, snaplen: snaplen, includeDrops: includeDrops, ringBytes: ringBytes)
            let ext: CaptureExtension
            if let c = self.capture {
                ext = c
            } else {
                ext = CaptureExtension()
                try self.sw.enable(ext, position: 0)
                self.capture = ext
            }
            ext.add(session, on: self.sw)
            return session
        }
    }

    /// Stops `session`; the last one disables the capture extension. Afterwards the session's
    /// counters are final and its ring holds what remains to be read, and its ports may take the
    /// fast path again (unless another session captures them).
    public func stopCapture(_ session: CaptureSession) async {
        await onQueueAsync {
            guard let ext = self.capture, ext.remove(session, on: self.sw) == 0 else { return }
            try? self.sw.disable(ext.name)
            self.capture = nil
        }
    }
}
