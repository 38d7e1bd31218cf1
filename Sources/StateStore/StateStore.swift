import ControlProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The VMs and ports the daemon is responsible for, as recorded in the state directory.
///
/// VM NICs are recorded with the MAC actually assigned, so a restarted daemon re-adopts the same
/// addresses.
public struct StateRecords: Codable, Sendable, Equatable {
    public var vms: [VMSpec]
    public var internalPorts: [InternalPortSpec]
    public var externalPorts: [ExternalPortSpec]
    /// VXLAN segments (their devices are tapswitch's: created at `segment add`, deleted at `segment del`).
    public var segments: [SegmentSpec]
    /// Port mirrors (`mirror add`, `[[mirror]]`): kept also while their ports are missing.
    public var mirrors: [MirrorSpec]
    /// Extensions' saved per-NIC state (NIC save/restore), by port name: written when the daemon
    /// stops, handed back once when the next run re-adopts the port, then dropped. Absent in files
    /// without any.
    public var nicStates: [String: [ExtensionNICState]]?

    public init(vms: [VMSpec] = [], internalPorts: [InternalPortSpec] = [], externalPorts: [ExternalPortSpec] = [],
                segments: [SegmentSpec] = [], mirrors: [MirrorSpec] = []) {
        self.vms = vms
        self.internalPorts = internalPorts
        self.externalPorts = externalPorts
        self.segments = segments
        self.mirrors = mirrors
    }

    public var isEmpty: Bool { vms.isEmpty && internalPorts.isEmpty && externalPorts.isEmpty && segments.isEmpty && mirrors.isEmpty }

    /// Every interface name recorded (TAPs, internal ports, external devices, segment devices).
    public var portNames: Set<String> {
        Set(vms.flatMap { $0.nics.map(\.tap) } + internalPorts.map(\.name) + externalPorts.map(\.device) + segments.map(\.name)
            + segments.filter(\.evpn).map(\.portName))
    }

    private enum CodingKeys: String, CodingKey { case vms, internalPorts, externalPorts, segments, mirrors, nicStates }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vms = try c.decode([VMSpec].self, forKey: .vms)
        internalPorts = try c.decode([InternalPortSpec].self, forKey: .internalPorts)
        externalPorts = try c.decode([ExternalPortSpec].self, forKey: .externalPorts)
        // Files written before segments existed have no such key.
        segments = try c.decodeIfPresent([SegmentSpec].self, forKey: .segments) ?? []
        mirrors = try c.decodeIfPresent([MirrorSpec].self, forKey: .mirrors) ?? []
        nicStates = try c.decodeIfPresent([String: [ExtensionNICState]].self, forKey: .nicStates)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vms, forKey: .vms)
        try c.encode(internalPorts, forKey: .internalPorts)
        try c.encode(externalPorts, forKey: .externalPorts)
        try c.encode(segments, forKey: .segments)
        if !mirrors.isEmpty { try c.encode(mirrors, forKey: .mirrors) }
        try c.encodeIfPresent(nicStates, forKey: .nicStates)
    }

    public func vm(named name: String) -> VMSpec? { vms.first { $0.name == name } }
}

/// Reads and writes ``StateRecords`` as `state.json` in the state directory.
///
/// Writes are atomic (temporary file, fsync, rename, fsync of the directory), so a crash leaves
/// either the old or the new file, never half of one.
public struct StateStore: Sendable {
    public let directory: String
    public var path: String { directory + "/state.json" }

    public init(directory: String) { self.directory = directory }

    /// Current on-disk format.
    static let formatVersion = 1

    private struct File: Codable {
        var version: Int
        var records: StateRecords
    }

    /// The recorded state; empty records when no file exists yet.
    public func load() throws(SwitchError) -> StateRecords {
        guard let data = try read() else { return StateRecords() }
        switch decode(data) {
        case .records(let r): return r
        case .otherVersion(let v): throw versionError(v)
        case .damaged(let why): throw SwitchError(.invalidState, "state file \(path) is damaged: \(why)")
        }
    }

    /// What ``loadRecovering(now:)`` found.
    public struct Recovery: Sendable, Equatable {
        public var records: StateRecords
        /// Where a damaged file was moved (`state.json.corrupt-TIME`); nil when the file was sound.
        public var setAside: String?
        /// Why the file was unreadable as a whole.
        public var damage: String?
        /// Recorded entries that could not be read, even one by one.
        public var lostEntries = 0
    }

    /// Like ``load()``, but a damaged file does not stop the daemon: it is renamed to
    /// `state.json.corrupt-TIME` (kept for a post-mortem, never overwritten) and every VM and port
    /// entry that still reads on its own is recovered. A file of another format version, or a
    /// state path that is not a regular file, is still an error: nothing is damaged there.
    public func loadRecovering(now: Date = Date()) throws(SwitchError) -> Recovery {
        guard let data = try read() else { return Recovery(records: StateRecords()) }
        let why: String
        switch decode(data) {
        case .records(let r): return Recovery(records: r)
        case .otherVersion(let v): throw versionError(v)
        case .damaged(let w): why = w
        }
        let aside = asideName(for: path, now: now)
        guard rename(path, aside) == 0 else {
            throw SwitchError(.system, "state file \(path) is damaged (\(why)) and cannot be moved aside to \(aside): \(errnoText())")
        }
        syncDirectory()
        var recovery = Recovery(records: StateRecords(), setAside: aside, damage: why)
        salvage(data, into: &recovery)
        return recovery
    }

    /// Every entry of a damaged file that decodes on its own (the JSON itself must still parse).
    private func salvage(_ data: Data, into recovery: inout Recovery) {
        guard let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let records = top["records"] as? [String: Any] else { return }
        func entries<T: Decodable>(_ key: String, _ type: T.Type) -> [T] {
            guard let list = records[key] as? [Any] else { return [] }
            return list.compactMap { item in
                guard let d = try? JSONSerialization.data(withJSONObject: item), let v = try? Wire.makeDecoder().decode(T.self, from: d) else {
                    recovery.lostEntries += 1
                    return nil
                }
                return v
            }
        }
        let vms = entries("vms", VMSpec.self), internals = entries("internalPorts", InternalPortSpec.self)
        let externals = entries("externalPorts", ExternalPortSpec.self)
        recovery.records = StateRecords(vms: vms, internalPorts: internals, externalPorts: externals,
                                        segments: entries("segments", SegmentSpec.self), mirrors: entries("mirrors", MirrorSpec.self))
    }

    private enum Decoded {
        case records(StateRecords)
        case otherVersion(Int)
        case damaged(String)
    }

    private func decode(_ data: Data) -> Decoded {
        do {
            let file = try Wire.makeDecoder().decode(File.self, from: data)
            return file.version == Self.formatVersion ? .records(file.records) : .otherVersion(file.version)
        } catch {
            return .damaged("\(error)")
        }
    }

    private func versionError(_ version: Int) -> SwitchError {
        SwitchError(.invalidState, "state file \(path) has format version \(version); this daemon reads version \(Self.formatVersion)")
    }

    /// The file's bytes; nil when there is none. A path that is not a regular file (a directory
    /// named `state.json`, say) or cannot be read is an error naming it and the reason.
    private func read() throws(SwitchError) -> Data? {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return nil }
            throw SwitchError(.system, "cannot read state file \(path): \(errnoText())")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            let kind = st.st_mode & S_IFMT == S_IFDIR ? "a directory" : st.st_mode & S_IFMT == S_IFLNK ? "a symbolic link" : "not a regular file"
            throw SwitchError(.invalidState, "state file \(path) is \(kind), not a regular file; move it out of the way")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SwitchError(.system, "cannot read state file \(path): \(errnoText())") }
        defer { close(fd) }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SwitchError(.system, "cannot read state file \(path): \(errnoText())")
            }
            if n == 0 { return data }
            data.append(contentsOf: chunk[0..<n])
        }
    }

    private func syncDirectory() {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    /// Creates the state directory and its parents (mode 0700) if needed. The daemon calls this
    /// once at start-up; ``save(_:)`` only ever creates the last component, so a save can never
    /// resurrect a tree someone removed.
    public func prepare() throws(SwitchError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw SwitchError(.system, "cannot create state directory \(directory): \(error.localizedDescription)")
        }
    }

    /// Replaces the recorded state atomically, creating the directory itself (mode 0700) if needed.
    public func save(_ records: StateRecords) throws(SwitchError) {
        let data: Data
        do {
            data = try Wire.makeEncoder(pretty: true).encode(File(version: Self.formatVersion, records: records))
        } catch {
            throw SwitchError(.system, "cannot encode state: \(error)")
        }
        try writeAtomically(data, to: "state.json")
    }

    /// Writes `data` as `name` in the directory: temporary file, fsync, rename, fsync of the
    /// directory, so a crash leaves the old or the new file, never half of one.
    private func writeAtomically(_ data: Data, to name: String) throws(SwitchError) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw SwitchError(.system, "cannot create state directory \(directory): \(errnoText())")
        }
        let path = "\(directory)/\(name)"
        let tmp = "\(directory)/.\(name).\(getpid()).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SwitchError(.system, "open \(tmp): \(errnoText())") }
        var ok = data.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return true
        }
        let writeErr = errno
        if ok, fsync(fd) != 0 { ok = false }
        close(fd)
        guard ok else {
            unlink(tmp)
            throw SwitchError(.system, "write \(tmp): \(errnoText(writeErr))")
        }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw SwitchError(.system, "rename \(tmp) to \(path): \(errnoText(e))")
        }
        // Make the rename itself durable.
        syncDirectory()
    }

    // MARK: - Intent record

    /// Where the intent record lives (present only while a device step is under way).
    public var intentPath: String { directory + "/intent.json" }

    /// Records, durably, that `intent` is about to create or delete devices (write-ahead: before
    /// the first device is touched). A restart that finds it completes or undoes the step.
    public func recordIntent(_ intent: Intent) throws(SwitchError) {
        let data: Data
        do { data = try Wire.makeEncoder(pretty: true).encode(intent) } catch {
            throw SwitchError(.system, "cannot encode intent: \(error)")
        }
        try writeAtomically(data, to: "intent.json")
    }

    /// Removes the intent record once its step is complete (or undone) and recorded.
    public func clearIntent() throws(SwitchError) {
        if unlink(intentPath) != 0 && errno != ENOENT {
            throw SwitchError(.system, "cannot remove intent record \(intentPath): \(errnoText())")
        }
        syncDirectory()
    }

    /// The intent record a crashed run left, if any. A damaged one is moved aside
    /// (`intent.json.corrupt-TIME`) and reported as `damage`: its step is then unknown.
    public func loadIntent(now: Date = Date()) throws(SwitchError) -> (intent: Intent?, damage: String?) {
        var st = stat()
        if lstat(intentPath, &st) != 0 {
            if errno == ENOENT { return (nil, nil) }
            throw SwitchError(.system, "cannot read intent record \(intentPath): \(errnoText())")
        }
        let data = FileManager.default.contents(atPath: intentPath) ?? Data()
        if st.st_mode & S_IFMT == S_IFREG, let intent = try? Wire.makeDecoder().decode(Intent.self, from: data) {
            return (intent, nil)
        }
        let aside = asideName(for: intentPath, now: now)
        guard rename(intentPath, aside) == 0 else {
            throw SwitchError(.system, "intent record \(intentPath) is damaged and cannot be moved aside to \(aside): \(errnoText())")
        }
        syncDirectory()
        return (nil, "intent record \(intentPath) was damaged; moved it aside to \(aside)")
    }

    // MARK: - Event numbers

    /// The first event number the next run may use (`event-seq`; 1 when missing or unreadable).
    public func nextEventNumber() -> UInt64 {
        guard let data = FileManager.default.contents(atPath: directory + "/event-seq"),
              let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              let n = UInt64(text), n > 0 else { return 1 }
        return n
    }

    /// Records the first event number the next run may use (atomically, durably).
    public func saveNextEventNumber(_ n: UInt64) throws(SwitchError) {
        try writeAtomically(Data("\(n)\n".utf8), to: "event-seq")
    }

    // MARK: - Switch identity

    /// This state directory's switch identity (16 hex digits, in `switch-id`, made once): the TAPs
    /// the daemon creates carry it in their marker, so a restarted daemon tells its own TAPs from
    /// those of another switch on the host. A missing or unreadable file gets a new identity.
    public func switchID() throws(SwitchError) -> String {
        let path = directory + "/switch-id"
        if let data = FileManager.default.contents(atPath: path),
           let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
           text.utf8.count == 16, text.allSatisfy({ $0.isHexDigit }) {
            return text
        }
        let hex = String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let id = String(repeating: "0", count: 16 - hex.count) + hex
        try writeAtomically(Data((id + "\n").utf8), to: "switch-id")
        return id
    }

    private func asideName(for path: String, now: Date) -> String {
        // 20270115T080000Z: UTC, sortable, no ':' (awkward in shells and some tools).
        let stamp = now.formatted(Date.ISO8601FormatStyle(timeZone: .gmt)).filter { $0 != ":" && $0 != "-" }
        var aside = "\(path).corrupt-\(stamp)"
        var n = 1
        while access(aside, F_OK) == 0 {
            n += 1
            aside = "\(path).corrupt-\(stamp)-\(n)"
        }
        return aside
    }
}

/// A step that creates or deletes devices, recorded before it starts (see
/// ``StateStore/recordIntent(_:)``): which VM, which TAPs, and whether they are being created or
/// deleted.
public struct Intent: Codable, Sendable, Equatable {
    public enum Operation: String, Codable, Sendable {
        case vmStart = "vm-start"
        case vmStop = "vm-stop"
    }
    public var operation: Operation
    public var vm: String
    public var taps: [String]

    public init(_ operation: Operation, vm: String, taps: [String]) {
        self.operation = operation
        self.vm = vm
        self.taps = taps
    }
}
