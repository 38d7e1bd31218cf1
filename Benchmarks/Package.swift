// swift-tools-version: 6.1
import Foundation
import PackageDescription

// SwiftPM names a path dependency after its directory (`main`, `tapswitch`, a worktree's name...):
// refer to the repository by whatever its checkout is called.
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

// Allocation and throughput benchmarks of the switch core, in their own package so the main build
// never resolves the benchmark tooling. From the repository root:
//   swift run --package-path Benchmarks -c release alloc-bench      (prints allocations per frame, ns/frame)
//   swift package --package-path Benchmarks benchmark                (ordo-one/benchmark: mallocs, ARC, time)
let package = Package(
    name: "tapswitch-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The switch set-ups both runners push traffic through.
        .target(
            name: "Scenarios",
            dependencies: [.product(name: "SwitchCore", package: repository), .product(name: "SwitchExtensions", package: repository),
                           .product(name: "PacketCapture", package: repository)],
            path: "Scenarios"
        ),
        // Counting malloc wrappers, linked only into alloc-bench.
        .target(name: "CMallocCounter", path: "CMallocCounter"),
        .executableTarget(name: "alloc-bench", dependencies: ["Scenarios", "CMallocCounter"], path: "alloc-bench"),
        .executableTarget(
            name: "AllocationBenchmark",
            dependencies: ["Scenarios", .product(name: "Benchmark", package: "benchmark")],
            path: "AllocationBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
