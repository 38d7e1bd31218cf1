#if canImport(Glibc)
import Glibc
#endif

/// Named points in the daemon's multi-step operations (`vm start`, `vm stop`) where a test can make
/// the process die by SIGKILL, to check that a restart completes or undoes the interrupted step.
///
/// Inert unless the environment variable `TAPSWITCH_CRASH_POINT_FILE` names a file: at each point
/// the daemon reads that file, and if it holds the point's name, removes the file (so the restarted
/// daemon does not die again) and kills itself with SIGKILL, exactly as an outside `kill -9` would.
/// Only the control path reaches these points, never the packet loop.
public enum CrashPoint {
    /// The file named by `TAPSWITCH_CRASH_POINT_FILE`, read once.
    private static let file: String? = getenv("TAPSWITCH_CRASH_POINT_FILE").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }

    /// Dies here if the crash-point file names `name`.
    public static func reach(_ name: String) {
        guard let file, let wanted = readSmallFile(file), wanted == name else { return }
        unlink(file)
        kill(getpid(), SIGKILL)
        // SIGKILL cannot be caught; wait for it to land.
        while true { pause() }
    }
}
