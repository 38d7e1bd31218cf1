import Foundation

/// Where `-w FILE` / `--output FILE` go.
///
/// A new path becomes a regular file; an existing regular file is replaced (by rename, so a reader
/// never sees half of it) or emptied. Anything else that exists — `/dev/null`, `/dev/stdout`, a FIFO —
/// is opened and written as it is: Foundation's atomic writes (and `FileManager.createFile`, which
/// is one) rename a temporary file over the path, and that replaced `/dev/null` with a regular file
/// when `tapswitchctl capture -w /dev/null` ran as root.
enum OutputFile {
    /// True when `path` exists and is not a regular file (a device, FIFO or socket).
    static func isSpecial(_ path: String) -> Bool {
        guard let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType else { return false }
        return type != .typeRegular && type != .typeDirectory
    }

    /// Opens `path` for a stream of writes: created if missing, emptied if a regular file.
    static func open(_ path: String) -> FileHandle? {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else { return nil }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else { return nil }
        if !isSpecial(path) {
            do { try handle.truncate(atOffset: 0) } catch { return nil }
        }
        return handle
    }

    /// Writes `data` whole: atomically to a regular file, straight into anything else.
    static func write(_ data: Data, to path: String) throws {
        if isSpecial(path) {
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: path])
            }
            defer { try? handle.close() }
            try handle.write(contentsOf: data)
        } else {
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        }
    }
}
