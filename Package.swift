// swift-tools-version: 6.2
import PackageDescription

// Module map (each named after what it does):
//   Locking         Locked<Value>: a pthread mutex around a value (visible to ThreadSanitizer, unlike Mutex).
//   SwitchTypes     the shared vocabulary: ids, MAC, VLAN, port/NIC kinds and states, counters, SwitchError.
//   SwitchCore      pure Swift: ports, NICs, lifecycle, extension stack, frames, L2 learning.
//   EmbeddedSwitch  in-memory switch harness for unit tests of the core and of extensions.
//   SwitchExtensions the shipped extensions (port policies, duplicate-MAC guard) and their registry.
//   CNetlink        system library: libnl-3 and libnl-route-3 (pkg-config).
//   CTapShim        thin C: TUN ioctls, AF_PACKET constants, mmsghdr/recvmmsg/sendmmsg.
//   CLibBPF         system library: libbpf (pkg-config), to load the XDP fast path (bpf/, scripts/build-bpf).
//   LinuxNet        every syscall: owners of netlink sockets, TAPs, AF_PACKET sockets and rings, epoll/eventfd.
//   DataPlane       the Dispatch packet loop binding SwitchCore to the devices: PortDriver (AF_PACKET ring,
//                   TUN queue) and the DeviceLayer seam (LinuxNet by default). Makes no syscalls itself.
//   FakeVM          attaches to a TAP exactly as QEMU does (tests, benchmarks).
//   FakeDevices     (Tests/) in-memory DeviceLayer: the real runtime without root, for tests.
//   tapswitchd-fake (Tests/) tapswitchd on FakeDevices: the device-free daemon of the unprivileged tests.
//   ControlProtocol JSON messages between tapswitchctl and tapswitchd.
//   DaemonConfig    the TOML subset and the config loader (every problem with its line).
//   StateStore      the VM/port records of the previous run (state.json).
//   ServiceSupport  systemd notify and watchdog, logging, signals as events.
//   SwitchService   ControlService (requests, records) and the backend over the switch, EventHub.
//   ControlServer   the unix control socket: peer checks, one request line, the answer.
//   MetricsExporter the Prometheus /metrics endpoint: a small HTTP server and the text format, read at scrape time.
//   TapswitchDaemon tapswitchd's command line and life: config, adoption, socket, READY, signals, shutdown deadline.
//   TapswitchKit    for extension authors: re-exports SwitchCore and the registry; runs tapswitchd
//                   with their extensions added (examples/ethertype-filter).
//   Pcapng          the pcapng capture format: writer and stream reader (no I/O).
//   PacketCapture   the capture-class extensions: live capture with its lock-free rings (tapswitchctl capture), port mirroring.
//   LibvirtHook     reads libvirt domain XML: which interfaces are tapswitch's, their NIC options.
//   tapswitch-fuzz  (Fuzz/) libFuzzer targets: frames through the core, control requests, config files (scripts/fuzz).
let package = Package(
    name: "tapswitch",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tapswitchd", targets: ["tapswitchd"]),
        .executable(name: "tapswitchctl", targets: ["tapswitchctl"]),
        .executable(name: "tapswitch-fakevm", targets: ["tapswitch-fakevm"]),
        .library(name: "SwitchTypes", targets: ["SwitchTypes"]),
        .library(name: "SwitchCore", targets: ["SwitchCore"]),
        .library(name: "EmbeddedSwitch", targets: ["EmbeddedSwitch"]),
        .library(name: "SwitchExtensions", targets: ["SwitchExtensions"]),
        .library(name: "DataPlane", targets: ["DataPlane"]),
        .library(name: "TapswitchKit", targets: ["TapswitchKit"]),
        .library(name: "PacketCapture", targets: ["PacketCapture"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "Locking"),
        .target(name: "SwitchTypes"),
        .target(name: "SwitchCore", dependencies: ["SwitchTypes"]),
        .target(name: "EmbeddedSwitch", dependencies: ["SwitchCore"]),
        .target(name: "SwitchExtensions", dependencies: ["SwitchCore"]),
        .target(name: "Pcapng"),
        .target(name: "PacketCapture", dependencies: ["SwitchCore", "Pcapng"]),
        .systemLibrary(
            name: "CNetlink",
            pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]
        ),
        .target(
            name: "CTapShim",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .systemLibrary(
            name: "CLibBPF",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev"])]
        ),
        .target(name: "LinuxNet", dependencies: ["Locking", "CNetlink", "CTapShim", "CLibBPF"]),
        .target(
            name: "DataPlane",
            dependencies: ["SwitchCore", "LinuxNet", "PacketCapture", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "FakeVM", dependencies: ["LinuxNet", "CTapShim"]),
        .target(name: "ControlProtocol", dependencies: ["SwitchTypes"]),
        .target(name: "StateStore", dependencies: ["ControlProtocol"]),
        .target(name: "DaemonConfig", dependencies: ["ControlProtocol", "StateStore", "SwitchExtensions"]),
        .target(name: "ServiceSupport", dependencies: ["Locking", "ControlProtocol", "LinuxNet", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "SwitchService",
            dependencies: ["Locking",
                "ControlProtocol", "DaemonConfig", "DataPlane", "LinuxNet", "PacketCapture", "ServiceSupport", "StateStore", "SwitchCore", "SwitchExtensions",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ControlServer",
            dependencies: ["Locking", "ControlProtocol", "PacketCapture", "ServiceSupport", "SwitchService", .product(name: "Logging", package: "swift-log")]
        ),
        .target(name: "LibvirtHook"),
        .target(
            name: "MetricsExporter",
            dependencies: ["Locking", "ControlProtocol", "ServiceSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "TapswitchDaemon",
            dependencies: ["Locking",
                "ControlProtocol", "ControlServer", "DaemonConfig", "LinuxNet", "MetricsExporter", "ServiceSupport", "StateStore", "SwitchExtensions", "SwitchService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "TapswitchKit", dependencies: ["SwitchCore", "SwitchExtensions", "SwitchService", "TapswitchDaemon"]),
        .executableTarget(name: "tapswitchd", dependencies: ["TapswitchKit"]),
        // The device-free daemon for unprivileged tests: tapswitchd's code and backend over FakeDevices.
        .executableTarget(
            name: "tapswitchd-fake",
            dependencies: ["DataPlane", "FakeDevices", "SwitchCore", "SwitchExtensions", "SwitchService", "TapswitchDaemon"],
            path: "Tests/FakeDaemon"
        ),
        .executableTarget(
            name: "tapswitchctl",
            dependencies: ["ControlProtocol", "LibvirtHook", "Pcapng", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "tapswitch-fakevm",
            dependencies: ["FakeVM", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // libFuzzer targets (frames through the core, control requests, config files): scripts/fuzz.
        .target(name: "CFuzzDriver", path: "Fuzz/CFuzzDriver"),
        .executableTarget(
            name: "tapswitch-fuzz",
            dependencies: ["CFuzzDriver", "ControlProtocol", "DaemonConfig", "EmbeddedSwitch", "SwitchCore", "SwitchExtensions"],
            path: "Fuzz/tapswitch-fuzz"
        ),
        // Shared by the privileged test suites: privilege probe, unique names, netns, deadline polls.
        .target(name: "TestSupport", dependencies: ["Locking", "LinuxNet", "ControlProtocol"], path: "Tests/TestSupport"),
        // In-memory devices behind DataPlane's DeviceLayer: the real runtime without root (see its file header).
        .target(name: "FakeDevices", dependencies: ["Locking", "DataPlane", "LinuxNet", "SwitchCore"], path: "Tests/FakeDevices"),
        .testTarget(name: "SwitchCoreTests", dependencies: ["SwitchCore", "EmbeddedSwitch"]),
        .testTarget(name: "SwitchExtensionsTests", dependencies: ["SwitchExtensions", "SwitchCore", "EmbeddedSwitch"]),
        .testTarget(name: "LinuxNetTests", dependencies: ["Locking", "LinuxNet", "FakeVM", "TestSupport"]),
        .testTarget(name: "DataPlaneTests", dependencies: ["Locking", "DataPlane", "FakeDevices", "FakeVM", "LinuxNet", "TestSupport"]),
        .testTarget(
            name: "DaemonTests",
            dependencies: ["Locking",
                "TapswitchDaemon", "ControlServer", "DaemonConfig", "MetricsExporter", "ServiceSupport", "StateStore", "SwitchService",
                "ControlProtocol", "DataPlane", "FakeDevices", "FakeVM", "Pcapng", "SwitchCore", "SwitchExtensions", "TestSupport",
            ]
        ),
        .testTarget(name: "PacketCaptureTests", dependencies: ["PacketCapture", "Pcapng", "SwitchCore", "EmbeddedSwitch"]),
        .testTarget(name: "LibvirtHookTests", dependencies: ["LibvirtHook", "ControlProtocol"]),
        .testTarget(name: "QEMUTests", dependencies: ["Locking", "ControlProtocol", "TestSupport"]),
    ]
)
