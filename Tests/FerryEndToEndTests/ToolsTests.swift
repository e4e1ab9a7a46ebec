import Foundation
import Testing

/// The tools beside the code: the Wireshark dissector (checked with Debian's tshark on a capture of a whole session)
/// and the systemd unit (checked with systemd-analyze, and its command line with ferryd itself).
@Suite("Tools")
struct ToolsTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func executable(_ path: String) -> Bool {
        FileManager.default.isExecutableFile(atPath: path)
    }

    /// Tools/wireshark/check.py writes a capture of every message type, cut across TCP segments, and of a corrupted
    /// frame on another port, runs tshark with the dissector, and checks every frame's fields and the CRC error.
    @Test(.enabled(if: Self.executable("/usr/bin/tshark"), "needs tshark (Debian: apt-get install tshark)"))
    func theWiresharkDissectorDecodesEverySessionAndFlagsACorruptedFrame() async throws {
        let check = try await Binaries.run(
            program: "/usr/bin/python3",
            [Self.repository.appendingPathComponent("Tools/wireshark/check.py").path]
        )
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("dissector ok: 32 frames decoded"), "\(check.stdout)")
    }

    /// systemd-analyze finds nothing to say of the unit (it only warns of a bad value), which has the hardening the
    /// service needs; and ferryd starts with the unit's own command line.
    @Test(.enabled(if: Self.executable("/usr/bin/systemd-analyze"), "needs systemd-analyze"))
    func theSystemdUnitVerifiesAndItsCommandLineStartsFerryd() async throws {
        let unit = try String(
            contentsOf: Self.repository.appendingPathComponent("Tools/systemd/ferryd.service"),
            encoding: .utf8
        )
        for directive in [
            "DynamicUser=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/ferry", "NoNewPrivileges=yes",
            "PrivateTmp=yes", "Restart=on-failure", "StateDirectory=ferry",
        ] {
            #expect(unit.split(separator: "\n").contains { $0 == directive }, "\(directive)")
        }
        let ferryd = try Binaries.url("ferryd").path
        let folder = Scratch.makeDirectory("unit")
        let installed = folder.appendingPathComponent("ferryd.service")
        try unit.replacingOccurrences(of: "/usr/local/bin/ferryd", with: ferryd)
            .write(to: installed, atomically: true, encoding: .utf8)
        let verify = try await Binaries.run(program: "/usr/bin/systemd-analyze", ["verify", installed.path])
        let said = verify.stdout + verify.stderr
        #expect(verify.status == 0 && said.isEmpty, "systemd-analyze verify: \(said)")

        // The unit's ExecStart, with a scratch library and a free port: ferryd takes it and serves.
        let line = try #require(unit.split(separator: "\n").first { $0.hasPrefix("ExecStart=") })
        var arguments = line.dropFirst("ExecStart=".count).split(separator: " ").dropFirst().map(String.init)
        let library = Scratch.makeDirectory("lib")
        try User.handOver(library)
        let root = try #require(arguments.firstIndex(of: "--root"))
        let port = try #require(arguments.firstIndex(of: "--port"))
        arguments[root + 1] = library.path
        arguments[port + 1] = "0"
        let daemon = try await CommandLineTests.Daemon.start(
            root: library,
            extraArguments: arguments,
            as: .ordinaryUser
        )
        #expect(daemon.stop() == 0)
    }
}

/// `ferry --trace` and `ferryd --log-level trace`: the frames of a real session, as a learner reads them.
@Suite("Tracing", .enabled(if: User.canRunUnprivileged))
struct TracingTests {
    @Test func ferryTracesAPutAndAGetFrameByFrameAndFerrydLogsTheSame() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        try Data("hello\n".utf8).write(to: work.appendingPathComponent("small.txt"))
        try User.handOver(library)
        try User.handOver(work)
        let log = Pipe()
        let daemon = try await CommandLineTests.Daemon.start(
            root: library,
            extraArguments: ["--log-level", "trace"],
            as: .ordinaryUser,
            stderr: log
        )
        let put = try await Binaries.run(
            "ferry",
            ["put", "small.txt", "--port", "\(daemon.port)", "--trace"],
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(put.status == 0, "\(put.stderr)")
        let sent = put.stderr.split(separator: "\n").map(String.init)
        let expected = [
            "ferry: trace → magic 89 46 45 52 52 59 0d 0a",
            "ferry: trace → HELLO [flags 0x00, 20 bytes, CRC-32 ok] min_version=1 max_version=4 "
                + "max_frame_payload=1048576 max_file_size=18446744073709551615",
            "ferry: trace → STOR [flags 0x00, 28 bytes, CRC-32 ok] size=6 offset=0 options=0x00 name=\"small.txt\"",
            "ferry: trace → DATA [flags 0x00, 6 bytes, CRC-32 ok] payload CRC-32 0x363a3020",
            "ferry: trace → END [flags 0x00, 12 bytes, CRC-32 ok] length=6 crc=0x363a3020",
            "ferry: trace ← READY [flags 0x00, 8 bytes, CRC-32 ok] offset=0",
            "ferry: trace ← OK [flags 0x00, 0 bytes, CRC-32 ok]",
        ]
        for line in expected {
            #expect(sent.contains(line), "\(line)\n\(put.stderr)")
        }
        let get = try await Binaries.run(
            "ferry",
            ["get", "small.txt", "-o", "back.txt", "--port", "\(daemon.port)", "--trace=data"],
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(get.status == 0, "\(get.stderr)")
        #expect(
            get.stderr.contains("ferry: trace → RETR [flags 0x00, 19 bytes, CRC-32 ok] offset=0 name=\"small.txt\"")
        )
        #expect(
            get.stderr.contains(
                "ferry: trace ← DATA [flags 0x00, 6 bytes, CRC-32 ok] payload CRC-32 0x363a3020 bytes=68 65 6c 6c 6f 0a"
            )
        )
        #expect(
            get.stderr.contains(
                "ferry: trace ← END [flags 0x00, 16 bytes, CRC-32 ok] length=6 crc=0x363a3020 file_crc=0x363a3020"
            )
        )
        #expect(daemon.stop() == 0)
        let logged = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(
            logged.contains(
                "received STOR [flags 0x00, 28 bytes, CRC-32 ok] size=6 offset=0 options=0x00 name=\"small.txt\""
            ),
            "\(logged.suffix(2000))"
        )
        #expect(
            logged.contains("sent END [flags 0x00, 16 bytes, CRC-32 ok] length=6 crc=0x363a3020 file_crc=0x363a3020")
        )
    }
}
