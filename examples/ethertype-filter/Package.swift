// swift-tools-version: 6.2
import PackageDescription

// An extension built outside tapswitch: a filter dropping frames by EtherType, and a tapswitchd
// that offers it next to the shipped extensions (see README "Writing your own extension").
// Outside this repository, depend on tapswitch by URL instead of by path.
let package = Package(
    name: "ethertype-filter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tapswitchd-custom", targets: ["tapswitchd-custom"]),
        .library(name: "EtherTypeFilter", targets: ["EtherTypeFilter"]),
    ],
    dependencies: [
        .package(name: "tapswitch", path: "../.."),
    ],
    targets: [
        // The extension itself needs only the kit (SwitchCore and the registry types).
        .target(name: "EtherTypeFilter", dependencies: [.product(name: "TapswitchKit", package: "tapswitch")]),
        .executableTarget(
            name: "tapswitchd-custom",
            dependencies: ["EtherTypeFilter", .product(name: "TapswitchKit", package: "tapswitch")]
        ),
        // Per-thread malloc counting for the allocation test (test-only).
        .target(name: "CThreadAllocations", path: "Tests/CThreadAllocations"),
        .testTarget(
            name: "EtherTypeFilterTests",
            dependencies: ["EtherTypeFilter", "CThreadAllocations", .product(name: "EmbeddedSwitch", package: "tapswitch")]
        ),
    ]
)
