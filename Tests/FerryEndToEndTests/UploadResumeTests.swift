import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Uploads cut by faults on the path (a relay that cuts or stalls connections), by a server killed outright, or left
/// too long, resume where the server's verified copy ends, or start again for a reason (protocol version 4): `ferry
/// put` retries by itself, the server keeps what it verified, and the file it commits is proven whole by the
/// client's whole-file CRC-32. Binaries run as an ordinary user.
@Suite("Resumed uploads", .enabled(if: User.canRunUnprivileged))
struct UploadResumeTests {
    typealias Daemon = CommandLineTests.Daemon

    private struct Setup {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        let state = Scratch.makeDirectory("state")
        var original: [UInt8]
        var daemon: Daemon

        init(size: Int, daemonArguments: [String] = []) async throws {
            self.original = Scratch.randomBytes(size)
            try Data(self.original).write(to: self.work.appendingPathComponent("big.bin"))
            try User.handOver(self.library)
            try User.handOver(self.work)
            try User.handOver(self.state)
            self.daemon = try await Daemon.start(root: self.library, extraArguments: daemonArguments, as: .ordinaryUser)
        }

        var source: URL { self.work.appendingPathComponent("big.bin") }
        var kept: URL { self.library.appendingPathComponent(".ferry-staging/.kept") }

        func put(through port: Int, _ extra: [String] = []) async throws -> Binaries.Outcome {
            try await Binaries.run(
                "ferry",
                ["put", "big.bin", "--port", "\(port)", "--retry-wait", "0.01"] + extra,
                as: .ordinaryUser,
                environment: ["XDG_STATE_HOME": self.state.path],
                currentDirectory: self.work
            )
        }

        func stored() throws -> [UInt8] {
            [UInt8](try Data(contentsOf: self.library.appendingPathComponent("big.bin")))
        }

        /// The server's kept uploads: the length of each one's bytes, and its record.
        func keptUploads() -> [(bytes: Int, record: String)] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: self.kept.path)) ?? []
            return names.filter { !$0.contains(".") }.map { name in
                let path = self.kept.appendingPathComponent(name).path
                let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int ?? 0
                return (size, (try? String(contentsOfFile: path + ".upload", encoding: .utf8)) ?? "")
            }
        }

        /// A relay to the server whose first connection is cut after `cut` of the client's bytes, and `ferry put`
        /// through it without retrying, cut there: the server keeps what it verified.
        func relayAfterACutUpload(at cut: Int) async throws -> RecordingRelay {
            let relay = try RecordingRelay.start(
                forwardingTo: self.daemon.port,
                faults: [.cutToServer(after: cut)],
                recording: false
            )
            let put = try await self.put(through: relay.port, ["--retries", "0"])
            #expect(put.status == 1, "\(put.stderr)")
            #expect(self.keptUploads().count == 1, "kept to resume")
            return relay
        }

        /// The library holds the file and nothing is staged (the record a committed upload leaves holds no bytes).
        func expectCommittedAlone() throws {
            #expect(try Scratch.libraryContents(self.library) == ["big.bin"])
        }
    }

    /// The `kept` field of a server's record.
    private static func keptLength(_ record: String) -> Int? {
        record.split(separator: "\n").first { $0.hasPrefix("kept ") }.flatMap { Int($0.dropFirst(5)) }
    }

    @Test func anUploadCutTenTimesArrivesWholeMovingLittleMoreThanTheFile() async throws {
        let size = 64 << 20
        let setup = try await Setup(size: size)
        defer { _ = setup.daemon.stop() }
        // Ten cuts of the client's bytes: inside the handshake, inside the first DATA frame's header (after the
        // magic, HELLO and STOR: 8 + 34 + 40 bytes), and at random places in the data, each connection after the one
        // before resumed. The random cuts come after 2 MiB of the connection's bytes, more than a whole DATA frame
        // (1 MiB, 256 KiB for the last 16 MiB) and the 256 KiB a server keeps at least, so that every one of them
        // leaves something kept: from 100 KB, two cuts in a row inside the first frame kept nothing, and about one
        // run in 80 saw one resume too few.
        var random = SystemRandomNumberGenerator()
        var cuts: [RecordingRelay.Fault] = [.cutToServer(after: 5), .cutToServer(after: 8 + 34 + 40 + 5)]
        for _ in 0..<8 {
            cuts.append(.cutToServer(after: Int.random(in: (2 << 20 + 100)...(size / 8), using: &random)))
        }
        let relay = try RecordingRelay.start(forwardingTo: setup.daemon.port, faults: cuts, recording: false)
        defer { relay.stop() }
        let put = try await setup.put(through: relay.port, ["--retries", "40"])
        #expect(put.status == 0, "\(put.stderr)")
        #expect(sameBytes(try setup.stored(), setup.original), "byte-identical")
        #expect(put.stderr.components(separatedBy: "connection lost").count - 1 == 10, "\(put.stderr)")
        #expect(put.stderr.components(separatedBy: "resuming 'big.bin' after").count - 1 == 8, "\(put.stderr)")
        let moved = relay.bytesMoved.toServer
        FaultTable.record(
            "upload 64 MiB",
            "10 cuts: handshake, DATA header, 8 random in the data",
            moved: moved,
            size: size,
            outcome: try put.status == 0 && sameBytes(setup.stored(), setup.original) ? "verified" : "FAILED"
        )
        #expect(Double(moved) <= 1.2 * Double(size), "moved \(moved) bytes for a \(size)-byte file")
        try setup.expectCommittedAlone()
    }

    @Test func anUploadCutBetweenItsDataAndEndOrAfterEndBeforeOKIsStoredOnce() async throws {
        let size = 8 << 20
        // 262,144-byte frames: the client's bytes up to its END are the magic, HELLO, STOR and 32 DATA frames.
        let beforeEnd = 8 + 34 + 40 + 32 * (262_144 + 14)
        // The server's bytes up to its OK: the magic, HELLO and READY with its token.
        let beforeOK = 8 + 34 + 38
        for (fault, what) in [
            (RecordingRelay.Fault.cutToServer(after: beforeEnd), "between DATA and END"),
            (.cutToClientBeforeMore(after: beforeOK), "after END, before OK"),
        ] {
            let setup = try await Setup(size: size)
            defer { _ = setup.daemon.stop() }
            let relay = try RecordingRelay.start(forwardingTo: setup.daemon.port, faults: [fault], recording: false)
            defer { relay.stop() }
            let put = try await setup.put(through: relay.port)
            #expect(put.status == 0, "\(what): \(put.stderr)")
            #expect(put.stdout.contains("stored big.bin → big.bin"), "\(what): \(put.stdout)")
            // Only END (and, after OK was lost, not even that) crossed again: the server had every byte.
            #expect(put.stderr.contains("resuming 'big.bin' after 8388608 of 8388608 bytes"), "\(what): \(put.stderr)")
            #expect(relay.bytesMoved.toServer < size + 200_000, "\(what): \(relay.bytesMoved.toServer)")
            FaultTable.record(
                "upload 8 MiB",
                "cut \(what)",
                moved: relay.bytesMoved.toServer,
                size: size,
                outcome: try put.status == 0 && sameBytes(setup.stored(), setup.original) ? "verified" : "FAILED"
            )
            #expect(sameBytes(try setup.stored(), setup.original), "\(what)")
            try setup.expectCommittedAlone()
        }
    }

    @Test func aServerKilledOutrightAndRestartedResumesFromItsLastRecord() async throws {
        let size = 64 << 20
        var setup = try await Setup(size: size, daemonArguments: ["--upload-checkpoint-bytes", "\(4 << 20)"])
        defer { _ = setup.daemon.stop() }
        let port = setup.daemon.port
        // The client's bytes stop at 40 MiB, and the server is killed while it waits for more.
        let relay = try RecordingRelay.start(
            forwardingTo: port,
            faults: [.stallToServer(after: 40 << 20)],
            recording: false
        )
        defer { relay.stop() }
        // Run to its end in the background (Binaries.run waits without holding a thread): the test goes on meanwhile.
        let (state, work, relayPort) = (setup.state.path, setup.work, relay.port)
        async let put = Binaries.run(
            "ferry",
            ["put", "big.bin", "--port", "\(relayPort)", "--retry-wait", "0.5", "--retries", "8"],
            as: .ordinaryUser,
            environment: ["XDG_STATE_HOME": state],
            currentDirectory: work
        )
        let deadline = ContinuousClock.now + .seconds(30)
        while (setup.keptUploads().compactMap { Self.keptLength($0.record) }.max() ?? 0) < 32 << 20,
            ContinuousClock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(20))
        }
        kill(setup.daemon.process.processIdentifier, SIGKILL)
        while setup.daemon.process.isRunning {
            try await Task.sleep(for: .milliseconds(10))
        }
        let recorded = setup.keptUploads().compactMap { Self.keptLength($0.record) }.max() ?? 0
        #expect(recorded >= 32 << 20, "the last record before the kill")
        setup.daemon = try await Daemon.start(
            root: setup.library,
            extraArguments: ["--port", "\(port)"],
            as: .ordinaryUser
        )
        #expect(setup.daemon.port == port)
        let finished = try await put
        let stderr = finished.stderr
        let status = finished.status
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("resuming 'big.bin' after"), "\(stderr)")
        #expect(sameBytes(try setup.stored(), setup.original), "byte-identical")
        #expect(relay.bytesMoved.toServer <= (40 << 20) + size - recorded + 200_000)
        FaultTable.record(
            "upload 64 MiB",
            "server SIGKILLed after 40 MiB (record at \(recorded) B), restarted",
            moved: relay.bytesMoved.toServer,
            size: size,
            outcome: try status == 0 && sameBytes(setup.stored(), setup.original)
                ? "verified" : "FAILED"
        )
        try setup.expectCommittedAlone()
    }

    @Test func aSourceChangedBetweenAttemptsIsUploadedAgainFromTheStart() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        let relay = try await setup.relayAfterACutUpload(at: 3 << 20)
        defer { relay.stop() }
        let replacement = Scratch.randomBytes(8 << 20)
        try Data(replacement).write(to: setup.source)
        let again = try await setup.put(through: relay.port)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("'big.bin' changed since the upload was cut"), "\(again.stderr)")
        #expect(sameBytes(try setup.stored(), replacement), "the new file, whole; nothing of the old")
        try setup.expectCommittedAlone()
        FaultTable.record(
            "upload 8 MiB",
            "cut at 3 MiB, source rewritten before the retry",
            moved: relay.bytesMoved.toServer,
            size: 8 << 20,
            outcome: again.status == 0 ? "restarted (source changed), verified" : "FAILED"
        )
    }

    @Test func aKeptPartDamagedOnTheServerIsNeverCommitted() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        let relay = try await setup.relayAfterACutUpload(at: 5 << 20)
        defer { relay.stop() }
        // A byte of the kept part changes on the server's disk: its record's CRC no longer holds.
        let names = try FileManager.default.contentsOfDirectory(atPath: setup.kept.path).filter { !$0.contains(".") }
        #expect(names.count == 1)
        let handle = try FileHandle(forUpdating: setup.kept.appendingPathComponent(names.first ?? ""))
        try handle.seek(toOffset: 1000)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: 1000)
        try handle.write(contentsOf: Data([byte[0] ^ 0x01]))
        try handle.close()
        let again = try await setup.put(through: relay.port)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(!again.stderr.contains("resuming"), "started again from byte 0: \(again.stderr)")
        #expect(sameBytes(try setup.stored(), setup.original))
        try setup.expectCommittedAlone()
        FaultTable.record(
            "upload 8 MiB",
            "cut at 5 MiB, a byte of the server's kept part flipped",
            moved: relay.bytesMoved.toServer,
            size: 8 << 20,
            outcome: again.status == 0 ? "restarted (kept part's CRC wrong), verified" : "FAILED"
        )
    }

    @Test func aKeptUploadExpiresAndIsRemoved() async throws {
        // 0.002 hours: 7.2 s (kept at least that long, however loaded the machine).
        let setup = try await Setup(size: 8 << 20, daemonArguments: ["--kept-upload-hours", "0.002"])
        defer { _ = setup.daemon.stop() }
        let relay = try await setup.relayAfterACutUpload(at: 3 << 20)
        defer { relay.stop() }
        let deadline = ContinuousClock.now + .seconds(25)
        while !setup.keptUploads().isEmpty, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(setup.keptUploads().isEmpty, "removed by the running server once expired")
        let again = try await setup.put(through: relay.port)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(!again.stderr.contains("resuming"), "nothing left to resume: \(again.stderr)")
        #expect(sameBytes(try setup.stored(), setup.original))
        FaultTable.record(
            "upload 8 MiB",
            "cut at 3 MiB, kept upload expired (7.2 s) before the retry",
            moved: relay.bytesMoved.toServer,
            size: 8 << 20,
            outcome: again.status == 0 ? "restarted (expired), verified" : "FAILED"
        )
    }

    @Test func keptUploadsBeyondTheByteLimitAreRemovedOldestFirst() async throws {
        let setup = try await Setup(size: 8 << 20, daemonArguments: ["--kept-upload-bytes", "\(6 << 20)"])
        defer { _ = setup.daemon.stop() }
        let relay = try RecordingRelay.start(forwardingTo: setup.daemon.port, recording: false)
        defer { relay.stop() }
        // Three uploads cut after about 3 MiB each: the limit holds two.
        for name in ["one", "two", "three"] {
            try FileManager.default.copyItem(at: setup.source, to: setup.work.appendingPathComponent(name))
            try User.handOver(setup.work)
            relay.inject([.cutToServer(after: 3 << 20)])
            let cut = try await Binaries.run(
                "ferry",
                ["put", name, "--port", "\(relay.port)", "--retries", "0"],
                as: .ordinaryUser,
                environment: ["XDG_STATE_HOME": setup.state.path],
                currentDirectory: setup.work
            )
            #expect(cut.status == 1)
            try await Task.sleep(for: .milliseconds(1100))  // records a second apart: "oldest" is clear
        }
        let kept = setup.keptUploads()
        #expect(kept.count == 2, "\(kept.map(\.record))")
        #expect(kept.reduce(0) { $0 + $1.bytes } <= 6 << 20)
        #expect(!kept.contains { $0.record.contains("name one\n") }, "the oldest went first")
    }

    @Test func theShellRetriesACutUploadAndResumesIt() async throws {
        let setup = try await Setup(size: 8 << 20)
        defer { _ = setup.daemon.stop() }
        // The shell's first connection checks the server; its put's is cut after 3 MiB.
        let relay = try RecordingRelay.start(
            forwardingTo: setup.daemon.port,
            faults: [.none, .cutToServer(after: 3 << 20)],
            recording: false
        )
        defer { relay.stop() }
        let shell = try await Binaries.run(
            "ferry",
            ["shell", "--port", "\(relay.port)"],
            as: .ordinaryUser,
            environment: ["XDG_STATE_HOME": setup.state.path],
            input: "put big.bin\nexit\n",
            currentDirectory: setup.work
        )
        #expect(shell.status == 0, "\(shell.stderr)")
        #expect(shell.stdout.contains("stored big.bin (8.0 MiB, verified)"), "\(shell.stdout)")
        #expect(shell.stderr.contains("retrying in 1 s (attempt 2 of 6)"), "\(shell.stderr)")
        #expect(shell.stderr.contains("resuming 'big.bin' after"), "\(shell.stderr)")
        #expect(sameBytes(try setup.stored(), setup.original))
        #expect(relay.bytesMoved.toServer < (8 << 20) + (4 << 20), "the rest only: \(relay.bytesMoved.toServer)")
    }
}
