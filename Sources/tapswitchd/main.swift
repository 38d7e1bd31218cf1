import TapswitchKit

// Kept short: everything lives in TapswitchD (non-isolated), not in MainActor top-level code.
// Custom builds with their own extensions call the same entry point (see TapswitchKit), which
// limits the capabilities first, before the first thread is started.
await TapswitchDaemonMain.run()
