import SwitchService
import TapswitchDaemon

// Kept to one line: everything lives in TapswitchD (non-isolated), not in MainActor top-level code.
await TapswitchD.start { DataPlaneBackend() }
