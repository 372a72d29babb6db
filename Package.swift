// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-sysv-pool",
    products: [
        .library(name: "CSysV", targets: ["CSysV"]),
        .library(name: "Pool", targets: ["Pool"]),
        .executable(name: "pool-server", targets: ["pool-server"]),
        .executable(name: "pool-client", targets: ["pool-client"]),
        .executable(name: "csysv-demo", targets: ["csysv-demo"]),
        .executable(name: "pool-bench", targets: ["pool-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // System headers (libc6-dev) reached through a modulemap; header-only static inline C.
        .systemLibrary(name: "CSysV", path: "CShim"),
        .target(
            name: "Pool",
            dependencies: [
                "CSysV",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "pool-server",
            dependencies: [
                "Pool",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pool-client",
            dependencies: [
                "Pool",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Uses the shim alone, as another package would.
        .executableTarget(name: "csysv-demo", dependencies: ["CSysV"]),
        .executableTarget(name: "pool-bench", dependencies: ["Pool", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(
            name: "PoolTests",
            dependencies: ["Pool", "CSysV"]
        ),
    ]
)
