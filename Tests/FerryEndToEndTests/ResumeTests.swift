import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Downloads cut by faults on the path (a relay that cuts or stalls connections) resume where they were cut, and are
/// proven whole by the server's whole-file CRC-32 (protocol version 3): `ferry get` retries by itself, keeps what
/// arrived verified, and never publishes a file whose kept part does not match. Binaries run as an ordinary user.
@Suite("Resumed downloads", .enabled(if: User.canRunUnprivileged))
struct ResumeTests {
    typealias Daemon = CommandLineTests.Daemon

    private struct Setup {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        let original: [UInt8]
        let daemon: Daemon

        init(size: Int) async throws {
            self.original = Scratch.randomBytes(size)
            try Data(self.original).write(to: self.library.appendingPathComponent("big.bin"))
            try User.handOver(self.library)
            try User.handOver(self.work)
            self.daemon = try await Daemon.start(root: self.library, as: .ordinaryUser)
        }

        var target: URL { self.work.appendingPathComponent("big.bin") }
        var partial: URL { self.work.appendingPathComponent(".big.bin.ferry-partial") }
        var record: URL { self.work.appendingPathComponent(".big.bin.ferry-partial.meta") }

        func get(through port: Int, _ extra: [String] = []) async throws -> Binaries.Outcome {
            try await Binaries.run(
                "ferry",
                ["get", "big.bin", "--port", "\(port)", "--retry-wait", "0.01"] + extra,
                as: .ordinaryUser,
                currentDirectory: self.work
            )
        }

        func received() throws -> [UInt8] {
            [UInt8](try Data(contentsOf: self.target))
        }
    }

    @Test func aDownloadCutTenTimesArrivesWholeMovingLittleMoreThanTheFile() async throws {
        let size = 64 << 20
        let setup = try await Setup(size: size)
        defer { _ = setup.daemon.stop() }
        // Ten cuts of the server's bytes: inside the handshake, inside a frame header, and at random places in the
        // data, each connection after the one before resumed.
        var random = SystemRandomNumberGenerator()
        var cuts: [RecordingRelay.Fault] = [.cutToClient(after: 5), .cutToClient(after: 8 + 14 + 4)]
        for _ in 0..<8 {
            cuts.append(.cutToClient(after: Int.random(in: 100_000...(size / 8), using: &random)))
        }
        let relay = try RecordingRelay.start(forwardingTo: setup.daemon.port, faults: cuts, recording: false)
        defer { relay.stop() }
        let get = try await setup.get(through: relay.port, ["--retries", "12"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(sameBytes(try setup.received(), setup.original), "byte-identical")
        #expect(get.stderr.components(separatedBy: "retrying in").count - 1 == 10, "\(get.stderr)")
        #expect(get.stderr.contains("resuming 'big.bin' after"), "\(get.stderr)")
        let moved = relay.bytesMoved.toClient
        #expect(Double(moved) <= 1.2 * Double(size), "moved \(moved) bytes for a \(size)-byte file")
        FaultTable.record(
            "download 64 MiB",
            "10 cuts: handshake, a frame header, 8 random in the data",
            moved: moved,
            size: size,
            outcome: try get.status == 0 && sameBytes(setup.received(), setup.original) ? "verified" : "FAILED"
        )
        #expect(!FileManager.default.fileExists(atPath: setup.partial.path))
        #expect(!FileManager.default.fileExists(atPath: setup.record.path))
    }

    @Test func aFileReplacedOnTheServerBetweenAttemptsIsDownloadedAgainFromTheStart() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        let relay = try RecordingRelay.start(
            forwardingTo: setup.daemon.port,
            faults: [.cutToClient(after: 3 << 20)],
            recording: false
        )
        defer { relay.stop() }
        let cut = try await setup.get(through: relay.port, ["--retries", "0"])
        #expect(cut.status == 1, "\(cut.stderr)")
        #expect(FileManager.default.fileExists(atPath: setup.record.path), "kept to resume")
        let replacement = Scratch.randomBytes(8 << 20)
        try Data(replacement).write(to: setup.library.appendingPathComponent("big.bin"))
        let again = try await setup.get(through: relay.port)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("changed on the server since the download was cut"), "\(again.stderr)")
        #expect(sameBytes(try setup.received(), replacement), "the new file, whole; nothing of the old")
        FaultTable.record(
            "download 8 MiB",
            "cut at 3 MiB, file replaced on the server before the retry",
            moved: relay.bytesMoved.toClient,
            size: 8 << 20,
            outcome: again.status == 0 ? "restarted (server's file changed), verified" : "FAILED"
        )
    }

    @Test func anEditedPartialIsNeverPublished() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        // Every attempt goes through the relay: the kept part belongs to the server as the client named it.
        let relay = try RecordingRelay.start(forwardingTo: setup.daemon.port, recording: false)
        defer { relay.stop() }
        /// A download cut after 3 MiB, which keeps what it received.
        func cutDownload() async throws {
            relay.inject([.cutToClient(after: 3 << 20)])
            #expect(try await setup.get(through: relay.port, ["--retries", "0"]).status == 1)
        }

        // Edited behind the record's back: caught by the record's CRC before anything is asked of the server.
        try await cutDownload()
        try Self.flipAByte(in: setup.partial, at: 1000)
        let edited = try await setup.get(through: relay.port)
        #expect(edited.status == 0, "\(edited.stderr)")
        #expect(edited.stderr.contains("no longer match what was received"), "\(edited.stderr)")
        #expect(sameBytes(try setup.received(), setup.original))

        // Edited with the record made to agree: caught by the server's whole-file CRC at END; never published, and
        // downloaded again from the start.
        try FileManager.default.removeItem(at: setup.target)
        try await cutDownload()
        try Self.flipAByte(in: setup.partial, at: 1000)
        var record = try String(contentsOf: setup.record, encoding: .utf8)
        let partialBytes = [UInt8](try Data(contentsOf: setup.partial))
        let kept = Int(record.split(separator: "\n").first { $0.hasPrefix("kept ") }?.dropFirst(5) ?? "") ?? 0
        let forged = String(Self.crc32(partialBytes[..<kept]), radix: 16)
        record =
            record.split(separator: "\n").map { $0.hasPrefix("crc32 ") ? "crc32 \(forged)" : String($0) }
            .joined(separator: "\n") + "\n"
        try record.write(to: setup.record, atomically: true, encoding: .utf8)
        try User.handOver(setup.work)
        let forgedRun = try await setup.get(through: relay.port)
        #expect(forgedRun.status == 0, "\(forgedRun.stderr)")
        #expect(forgedRun.stderr.contains("does not match the server's file"), "\(forgedRun.stderr)")
        #expect(sameBytes(try setup.received(), setup.original), "published only once whole and proven")
        FaultTable.record(
            "download 8 MiB",
            "2 cuts at 3 MiB; partial edited, then edited with a forged record",
            moved: relay.bytesMoved.toClient,
            size: 8 << 20,
            outcome: forgedRun.status == 0 ? "restarted twice (record CRC; whole-file CRC), verified" : "FAILED"
        )
    }

    @Test func interruptedDownloadsAreKeptAndResumedUnlessToldOtherwise() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        let relay = try RecordingRelay.start(
            forwardingTo: setup.daemon.port,
            faults: [.stallToClient(after: 4 << 20)],
            recording: false
        )
        defer { relay.stop() }
        // Ctrl-C during a stalled download: what arrived is kept, with its record.
        let process = try Binaries.launch(
            "ferry",
            ["get", "big.bin", "--port", "\(relay.port)"],
            as: .ordinaryUser,
            currentDirectory: setup.work
        )
        let deadline = ContinuousClock.now + .seconds(20)
        while (try? FileManager.default.attributesOfItem(atPath: setup.partial.path)[.size] as? Int) ?? 0 < 2 << 20,
            ContinuousClock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + SIGINT)
        #expect(FileManager.default.fileExists(atPath: setup.record.path), "kept on Ctrl-C")

        // --no-resume starts again and removes what was kept; a limit of 0 days does the same.
        let fresh = try await setup.get(through: relay.port, ["--no-resume"])
        #expect(fresh.status == 0 && !fresh.stderr.contains("resuming"), "\(fresh.stderr)")
        #expect(sameBytes(try setup.received(), setup.original))
        #expect(!FileManager.default.fileExists(atPath: setup.record.path))
    }

    @Test func theShellRetriesACutDownloadAndResumesIt() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        // The shell's first connection checks the server; its get's is cut after 3 MiB.
        let relay = try RecordingRelay.start(
            forwardingTo: setup.daemon.port,
            faults: [.none, .cutToClient(after: 3 << 20)],
            recording: false
        )
        defer { relay.stop() }
        let shell = try await Binaries.run(
            "ferry",
            ["shell", "--port", "\(relay.port)"],
            as: .ordinaryUser,
            input: "get big.bin\nexit\n",
            currentDirectory: setup.work
        )
        #expect(shell.status == 0, "\(shell.stderr)")
        #expect(shell.stdout.contains("received big.bin (8.0 MiB, verified)"), "\(shell.stdout)")
        #expect(shell.stderr.contains("retrying in 1 s (attempt 2 of 6)"), "\(shell.stderr)")
        #expect(shell.stderr.contains("resuming 'big.bin' after"), "\(shell.stderr)")
        #expect(sameBytes(try setup.received(), setup.original))
        #expect(relay.bytesMoved.toClient < (8 << 20) + (4 << 20), "the rest only: \(relay.bytesMoved.toClient)")
    }

    private static func flipAByte(in file: URL, at offset: UInt64) throws {
        let handle = try FileHandle(forUpdating: file)
        try handle.seek(toOffset: offset)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data([byte[0] ^ 0xFF]))
        try handle.close()
    }

    /// zlib's CRC-32, bit by bit: the test's own, independent of the code under test.
    private static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 {
                crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1
            }
        }
        return ~crc
    }
}
