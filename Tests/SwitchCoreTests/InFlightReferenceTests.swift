import EmbeddedSwitch
import SwitchCore
import Testing

@Suite("NIC_DELETE and PORT_DELETE wait for in-flight frames and references")
struct InFlightReferenceTests {
    /// A filtering extension that pends every frame from `pendFrom` while `armed`.
    final class Pender {
        let ext = RecordingExtension("pender", .filtering)
        var armed = true
        var pended: [PendedFrame] = []
        init(pendFrom port: @escaping () -> PortID?) {
            ext.onIngress = { [unowned self] ctx in
                guard armed else { return }
                for i in ctx.frames where ctx.isLive(i) && ctx.batch.source(i) == port() {
                    if let p = ctx.pend(i) { pended.append(p) }
                }
            }
        }
    }

    @Test("complete(pended) releases NIC_DELETE, then teardown and delete follow")
    func completeReleases() throws {
        let es = EmbeddedSwitch()
        var aID: PortID?
        let pender = Pender { aID }
        try es.sw.enable(pender.ext)
        let a = try es.addPort("a", mac: mac(1))
        aID = a
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, frame(.broadcast, mac(1)))
        #expect(pender.pended.count == 1)
        #expect(es.take(b).isEmpty)
        #expect(es.sw.nicReferenceCount(of: a) == 1)

        es.clearRecords()
        var completed = false
        let done = try es.sw.removePort(a) { completed = true }
        #expect(!done)
        #expect(es.eventKinds == [.nicDisconnect])
        #expect(es.sw.nic(of: a)?.state == .disconnected)
        #expect(es.sw.nicReferenceCount(of: a) == 1)
        #expect(!completed)
        // Still held: a further NIC_DELETE is just deferred, connect is refused.
        #expect(throws: SwitchError.self) { try es.sw.connectNIC(on: a) }

        es.sw.complete(pender.pended[0])
        #expect(es.eventKinds == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(pender.ext.kinds.suffix(3) == [.nicDelete, .portTeardown, .portDelete])
        #expect(completed)
        #expect(es.sw.port(a) == nil)
        #expect(es.take(b).isEmpty)  // completed = discarded
        es.sw.complete(pender.pended[0])  // twice: harmless
        #expect(es.eventKinds.count == 4)
    }

    @Test("resume() + flushPending(): the in-flight frame is still delivered, then NIC_DELETE follows")
    func resumeReleases() throws {
        let es = EmbeddedSwitch()
        var aID: PortID?
        let pender = Pender { aID }
        let below = RecordingExtension("below", .filtering)
        try es.sw.enable(pender.ext)
        try es.sw.enable(below)
        let a = try es.addPort("a", mac: mac(1))
        aID = a
        let b = try es.addPort("b", mac: mac(2))
        let payload = frame(.broadcast, mac(1), tag: 0x42)
        es.send(from: a, payload)
        #expect(below.ingressFrames.isEmpty)

        es.clearRecords()
        var completed = false
        try es.sw.removePort(a) { completed = true }
        #expect(es.eventKinds == [.nicDisconnect])
        pender.armed = false
        var portAliveOnEgress: [Bool] = []
        below.onEgress = { _ in portAliveOnEgress.append(es.sw.nic(of: a) != nil) }
        es.sw.resume(pender.pended[0])
        #expect(es.sw.hasPendingFrames)
        #expect(!completed)  // resume alone does not complete: the frame is still travelling
        es.flushPending()
        #expect(!es.sw.hasPendingFrames)
        // The frame was received before the disconnect: it completes its journey (pass-through).
        #expect(es.take(b) == [payload])
        #expect(below.ingressFrames == [payload])  // resumed below the pender
        #expect(portAliveOnEgress == [true], "NIC_DELETE overtook the in-flight frame")
        #expect(es.eventKinds == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(completed)
    }

    @Test("A resumed frame from a connected port is delivered below the extension that pended it")
    func resumeWhileConnected() throws {
        let es = EmbeddedSwitch()
        var aID: PortID?
        let pender = Pender { aID }
        try es.sw.enable(pender.ext)
        let a = try es.addPort("a", mac: mac(1))
        aID = a
        let b = try es.addPort("b", mac: mac(2))
        es.send(from: a, frame(.broadcast, mac(1), tag: 1))
        let seenBefore = pender.ext.ingressFrames.count
        es.sw.resume(pender.pended[0])
        es.flushPending()
        #expect(es.take(b) == [frame(.broadcast, mac(1), tag: 1)])
        #expect(pender.ext.ingressFrames.count == seenBefore)  // not shown to the pender again
        #expect(pender.pended.count == 1)
        #expect(es.sw.nicReferenceCount(of: a) == 0)
    }

    @Test("referenceNIC holds NIC_DELETE until dereferenceNIC")
    func nicReference() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.referenceNIC(on: a)
        var completed = false
        try es.sw.removePort(a) { completed = true }
        #expect(es.eventKinds.suffix(1) == [.nicDisconnect])
        #expect(es.sw.nicReferenceCount(of: a) == 1)
        // Not allowed after disconnect.
        #expect(throws: SwitchError.self) { try es.sw.referenceNIC(on: a) }
        try es.sw.dereferenceNIC(on: a)
        #expect(es.eventKinds.suffix(4) == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(completed)
        #expect(throws: SwitchError.self) { try es.sw.dereferenceNIC(on: a) }
    }

    @Test("referenceNIC is refused before NIC_CONNECT; dereference without reference is refused")
    func nicReferenceStates() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1), connect: false)
        let error = #expect(throws: SwitchError.self) { try es.sw.referenceNIC(on: a) }
        #expect(error?.code == .invalidState)
        #expect(throws: SwitchError.self) { try es.sw.dereferenceNIC(on: a) }
        #expect(es.sw.nicReferenceCount(of: a) == 0)
    }

    @Test("referencePort holds PORT_DELETE (not NIC_DELETE or teardown) until dereferencePort")
    func portReference() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.referencePort(a)
        try es.sw.referencePort(a)
        var completed = false
        let done = try es.sw.removePort(a) { completed = true }
        #expect(!done)
        #expect(es.eventKinds.suffix(3) == [.nicDisconnect, .nicDelete, .portTeardown])
        #expect(es.sw.port(a)?.state == .tearingDown)
        #expect(es.sw.portReferenceCount(of: a) == 2)
        try es.sw.dereferencePort(a)
        #expect(!completed)
        try es.sw.dereferencePort(a)
        #expect(es.eventKinds.last == .portDelete)
        #expect(completed)
        #expect(es.sw.port(a) == nil)
    }

    @Test("Explicit deleteNIC/deletePort return false while held and finish by themselves")
    func explicitDeferredDeletes() throws {
        let es = EmbeddedSwitch()
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.referenceNIC(on: a)
        try es.sw.disconnectNIC(on: a)
        #expect(try es.sw.deleteNIC(on: a) == false)
        #expect(es.sw.nic(of: a) != nil)
        try es.sw.dereferenceNIC(on: a)
        #expect(es.sw.nic(of: a) == nil)
        #expect(es.eventKinds.last == .nicDelete)

        try es.sw.referencePort(a)
        try es.sw.teardownPort(a)
        #expect(try es.sw.deletePort(a) == false)
        #expect(es.sw.port(a) != nil)
        try es.sw.dereferencePort(a)
        #expect(es.sw.port(a) == nil)
        #expect(es.eventKinds.last == .portDelete)
    }

    @Test("A reference released inside a control callback completes the delete afterwards")
    func releaseInsideCallback() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.referenceNIC(on: a)
        ext.onControl = { request, sw in
            if request.kind == .nicDisconnect { try? sw.dereferenceNIC(on: request.port.id) }
        }
        var completed = false
        try es.sw.removePort(a) { completed = true }
        #expect(completed)
        #expect(ext.kinds.suffix(4) == [.nicDisconnect, .nicDelete, .portTeardown, .portDelete])
        #expect(es.sw.ports.isEmpty)
    }

    @Test("A reference released while another port is being created finishes the removal without corrupting slots")
    func releaseDuringOtherCreate() throws {
        let es = EmbeddedSwitch()
        let ext = RecordingExtension("rec", .filtering)
        try es.sw.enable(ext)
        let a = try es.addPort("a", mac: mac(1))
        try es.sw.referenceNIC(on: a)
        var completed = false
        try es.sw.removePort(a) { completed = true }
        #expect(!completed)
        // The extension drops its reference while it handles the next PORT_CREATE.
        ext.onControl = { request, sw in
            if request.kind == .portCreate, sw.nicReferenceCount(of: a) > 0 { try? sw.dereferenceNIC(on: a) }
        }
        let b = try es.addPort("b", mac: mac(2))
        #expect(completed)
        #expect(es.sw.port(a) == nil)
        let c = try es.addPort("c", mac: mac(3))
        let d = try es.addPort("d", mac: mac(4))
        // Every port has its own slot: a broadcast reaches each other port exactly once.
        es.send(from: d, frame(.broadcast, mac(4)))
        #expect(es.take(b).count == 1)
        #expect(es.take(c).count == 1)
        es.send(from: b, frame(.broadcast, mac(2)))
        #expect(es.take(c).count == 1)
        #expect(es.take(d).count == 1)
        #expect(es.sw.counters(of: b)?.framesIn == 1)
        #expect(es.sw.counters(of: c)?.framesIn == 0)
    }
}

@Suite("Control steps wait for the batch")
struct BatchBoundaryTests {
    /// Completes a pended frame and tries a lifecycle call from inside its ingress callback.
    final class CompletingFilter: SwitchExtension {
        let name = "completer"
        let extensionClass = ExtensionClass.filtering
        var pended: PendedFrame?
        var lifecycleError: SwitchError?
        var completeNow = false
        func ingress(_ context: inout IngressContext) {
            for i in context.frames where context.isLive(i) {
                if pended == nil { pended = context.pend(i) }
            }
            if completeNow, let p = pended {
                context.sw.complete(p)
                do { try context.sw.createPort(name: "late", type: .internal) } catch { lifecycleError = error }
            }
        }
    }

    @Test("a lifecycle call from a batch callback is refused; a delete freed mid-batch happens after the batch")
    func deferredToBatchEnd() throws {
        let e = EmbeddedSwitch()
        let ext = CompletingFilter()
        try e.sw.enable(ext)
        let a = try e.addPort("a", mac: MACAddress(2, 0, 0, 0, 0, 1))
        let b = try e.addPort("b", mac: MACAddress(2, 0, 0, 0, 0, 2))
        e.send(from: a, TestFrame.ethernet(dst: .broadcast, src: MACAddress(2, 0, 0, 0, 0, 1)))
        #expect(ext.pended != nil)
        try e.sw.removePort(a)
        #expect(e.events.last?.kind == .nicDisconnect)  // held by the pended frame
        ext.completeNow = true
        e.clearRecords()
        e.send(from: b, TestFrame.ethernet(dst: .broadcast, src: MACAddress(2, 0, 0, 0, 0, 2)))
        #expect(ext.lifecycleError?.code == .invalidState)
        #expect(e.sw.port(named: "late") == nil)
        #expect(e.events.map(\.kind) == [.nicDelete, .portTeardown, .portDelete])
        #expect(e.sw.port(a) == nil)
    }
}
