// swift-tools-version:6.1
// Ferry's libFuzzer harnesses: a package of their own, so the sanitizer flags never touch the main build.
// Build and run them with ./run.sh; see README.md.
import PackageDescription

let harnesses = ["FuzzFrameParser", "FuzzMessageDecoder", "FuzzRoundTrip", "FuzzServerSession", "FuzzClientReplies"]

let package = Package(
    name: "FerryFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Ferry", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "FerryProtocol", package: "Ferry"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        )
    ]
        + harnesses.map { name in
            .executableTarget(
                name: name,
                dependencies: [
                    "FuzzSupport",
                    .product(name: "FerryProtocol", package: "Ferry"),
                    .product(name: "FerryServer", package: "Ferry"),
                    .product(name: "FerryClient", package: "Ferry"),
                    .product(name: "NIOCore", package: "swift-nio"),
                    .product(name: "NIOEmbedded", package: "swift-nio"),
                    .product(name: "NIOPosix", package: "swift-nio"),
                    .product(name: "Logging", package: "swift-log"),
                ],
                swiftSettings: [.unsafeFlags(["-parse-as-library"])]
            )
        },
    swiftLanguageModes: [.v6]
)
