import EtherTypeFilter
import TapswitchKit

// tapswitchd with one more extension: same command line, config and control socket as the shipped
// daemon; `[extensions] enable` may now list "ethertype-filter".
await TapswitchDaemonMain.run(extensions: [EtherTypeFilter.registryEntry])
