// Kept to one line: everything lives in TapswitchCtl, not in MainActor top-level code.
TapswitchCtl.start()
