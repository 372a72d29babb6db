// swift-tools-version:6.0
// Microbenchmarks of the hot paths (codecs, queue round trip, the master's send path), with
// google/swift-benchmark. A package of its own so the main package's build, tests and CI never
// compile it. Run: scripts/microbench.sh (ratios to each group's baseline, same invocation).
import PackageDescription

let package = Package(
    name: "pool-microbench",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "swift-sysv-pool", path: ".."),
        .package(url: "https://github.com/google/swift-benchmark", from: "0.1.2"),
    ],
    targets: [
        .executableTarget(
            name: "pool-microbench",
            dependencies: [
                .product(name: "Pool", package: "swift-sysv-pool"),
                .product(name: "Benchmark", package: "swift-benchmark"),
            ]),
    ],
    // Globals shared by benchmark closures; the harness runs them on one thread.
    swiftLanguageModes: [.v5]
)
