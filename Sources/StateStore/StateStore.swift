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

    public init(vms: [VMSpec] = [], internalPorts: [InternalPortSpec] = [], externalPorts: [ExternalPortSpec] = []) {
        self.vms = vms
        self.internalPorts = internalPorts
        self.externalPorts = externalPorts
    }

    public var isEmpty: Bool { vms.isEmpty && internalPorts.isEmpty && externalPorts.isEmpty }

    /// Every interface name recorded (TAPs, internal ports, external devices).
    public var portNames: Set<String> {
        Set(vms.flatMap { $0.nics.map(\.tap) } + internalPorts.map(\.name) + externalPorts.map(\.device))
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
        guard FileManager.default.fileExists(atPath: path) else { return StateRecords() }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw SwitchError(.system, "cannot read state file \(path): \(error.localizedDescription)")
        }
        do {
            let file = try Wire.makeDecoder().decode(File.self, from: data)
            guard file.version == Self.formatVersion else {
                throw SwitchError(.invalidState, "state file \(path) has format version \(file.version); this daemon reads version \(Self.formatVersion)")
            }
            return file.records
        } catch let e as SwitchError {
            throw e
        } catch {
            throw SwitchError(.invalidState, "state file \(path) is damaged: \(error)")
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
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw SwitchError(.system, "cannot create state directory \(directory): \(errnoText())")
        }
        let data: Data
        do {
            data = try Wire.makeEncoder(pretty: true).encode(File(version: Self.formatVersion, records: records))
        } catch {
            throw SwitchError(.system, "cannot encode state: \(error)")
        }
        let tmp = "\(directory)/.state.json.\(getpid()).tmp"
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
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }
}
