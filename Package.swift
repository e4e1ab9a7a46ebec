// swift-tools-version:6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Ferry",
    defaultLocalization: "en",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FerryProtocol", targets: ["FerryProtocol"]),
        .library(name: "FerryServer", targets: ["FerryServer"]),
        .library(name: "FerryClient", targets: ["FerryClient"]),
        .executable(name: "ferryd", targets: ["ferryd"]),
        .executable(name: "ferry", targets: ["ferry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: - Protocol
        .target(
            name: "CZlib",
            linkerSettings: [.linkedLibrary("z")]
        ),
        .target(
            name: "FerryProtocol",
            dependencies: [
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),

        // TLS (SPEC.md §4.1): certificates, fingerprints, how a client decides to trust a server, and the
        // one-line answers when a plain peer meets a TLS one.
        .target(
            name: "FerryTLS",
            dependencies: [
                "FerryProtocol",
                "FerryTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),

        .target(name: "CMallocTuning"),
        .target(name: "CFileCalls"),
        .target(
            name: "FerryTransport",
            dependencies: [
                "CMallocTuning",
                "CFileCalls",
                "FerryProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
            ],
            // What ferry and ferryd say to people, a strings table per language (see Localization.swift).
            resources: [.process("Resources")],
            swiftSettings: strictSettings
        ),

        // MARK: - Server
        .target(
            name: "FerryServer",
            dependencies: [
                "CFileCalls",
                "FerryProtocol",
                "FerryTransport",
                "FerryTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "ferryd",
            dependencies: [
                "FerryProtocol",
                "FerryServer",
                "FerryTransport",
                "FerryTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: - Client
        .target(
            name: "FerryClient",
            dependencies: [
                "FerryProtocol",
                "FerryTransport",
                "FerryTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "ferry",
            dependencies: [
                "FerryClient",
                "FerryTransport",
                "FerryTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings,
            // Swift links executables with every symbol exported for dynamic lookup (29,000 in a static `ferry`),
            // which only `dladdr` reads; the runtime's start-up makes one such lookup, a linear walk of them all.
            // Exporting none took `ferry list --json` of 10,000 entries from 8.1 to 7.6 ms (hyperfine, 80 runs).
            linkerSettings: [.unsafeFlags(["-Xlinker", "--no-export-dynamic"], .when(platforms: [.linux]))]
        ),

        // MARK: - Benchmarks
        .executableTarget(
            name: "CodecBenchmark",
            dependencies: [
                "FerryProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/CodecBenchmark",
            swiftSettings: strictSettings
        ),

        // MARK: - Tests
        .testTarget(
            name: "FerryEndToEndTests",
            dependencies: [
                "FerryProtocol",
                "FerryTransport",
                "FerryServer",
                "FerryClient",
                "FerryTLS",
                "ferryd",
                "ferry",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FerryProtocolTests",
            dependencies: [
                "FerryProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
