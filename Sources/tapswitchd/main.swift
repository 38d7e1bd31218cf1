import SwitchService
import TapswitchDaemon

// Kept short: everything lives in TapswitchD (non-isolated), not in MainActor top-level code.
// Capabilities are per thread: they are limited here, before the first thread is started.
TapswitchD.limitCapabilities()
await TapswitchD.start { DataPlaneBackend() }
