import FerryClient
import FerryProtocol
import FerryServer
import Foundation
import NIOCore
import Testing

/// Everything that can go wrong midway, and the promise that nothing half-done ever becomes visible.
@Suite("Failures lose nothing", .timeLimit(.minutes(1)))
struct FailureTests {
    /// STOR accepted, then the raw connection for the data.
    private func startUpload(_ name: String, size: UInt64, server: TestServer) async throws -> RawConnection {
        let connection = try await RawConnection.handshaken(port: server.port)
        try await connection.send(.store(StoreRequest(name: name, size: size)))
        guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
        return connection
    }

    /// Waits until the server has cleaned up after a dropped connection (it learns of it asynchronously).
    private func waitUntilFolder(_ server: TestServer, equals expected: [String]) async throws {
        for _ in 0..<200 where try server.folderContents() != expected {
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(try server.folderContents() == expected)
    }

    @Test func aClientKilledMidUploadLeavesNothingAndARetrySucceeds() async throws {
        try await TestServer.run { server in
            let bytes = Scratch.randomBytes(1 << 20, seed: 1)
            let connection = try await self.startUpload("victim", size: UInt64(bytes.count), server: server)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: bytes[..<300_000]))))
            // Half a frame, then the socket goes away, as when the process is killed.
            try await connection.send(
                raw: Array(
                    RawConnection.encode(.data(DataChunk(ByteBuffer(bytes: bytes[300_000..<400_000])))).prefix(5_000)
                )
            )
            #expect(
                try server.folderContents().contains { $0.hasPrefix(".ferry-staging/") },
                "staging exists while uploading"
            )
            await connection.close()
            try await self.waitUntilFolder(server, equals: [])

            let scratch = Scratch.makeDirectory("client")
            try Data(bytes).write(to: scratch.appendingPathComponent("victim"))
            try await server.client.withConnection {
                _ = try await $0.put(scratch.appendingPathComponent("victim").path, as: "victim")
            }
            #expect(try server.contents(of: "victim") == bytes)
            #expect(try server.folderContents() == ["victim"])
        }
    }

    @Test func aFerryPutProcessKilledMidUploadLeavesOnlyWhatItResumes() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("client")
            let source = scratch.appendingPathComponent("big")
            // Large enough that the upload is still running when the process is killed.
            try Data(Scratch.randomBytes(128 << 20, seed: 2)).write(to: source)
            let process = try Binaries.launch("ferry", ["put", source.path, "--port", "\(server.port)"])
            // Killed once the server has some of it.
            let kept = server.root.appendingPathComponent(".ferry-staging/.kept")
            func received() -> Int {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: kept.path)) ?? []
                return names.filter { !$0.contains(".") }.map {
                    (try? FileManager.default.attributesOfItem(atPath: kept.appendingPathComponent($0).path))?[.size]
                        as? Int ?? 0
                }.max() ?? 0
            }
            for _ in 0..<1000 where received() < 8 << 20 {
                try await Task.sleep(for: .milliseconds(5))
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            // Nothing in the library; the server keeps what it verified (version 4), its bytes and their record.
            var contents: [String] = []
            for _ in 0..<200 {
                contents = try server.folderContents()
                if contents.count == 2, contents.allSatisfy({ $0.hasPrefix(".ferry-staging/.kept/") }) { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(contents.count == 2 && contents.allSatisfy { $0.hasPrefix(".ferry-staging/.kept/") }, "\(contents)")
            // Run again, ferry resumes it, and then nothing is staged.
            let again = try await Binaries.run("ferry", ["put", source.path, "--port", "\(server.port)"])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stderr.contains("resuming 'big' after"), "\(again.stderr)")
            #expect(try server.folderContents() == ["big"])
        }
    }

    @Test func aFlippedBitInADataFrameIsRefusedAndNothingIsCommitted() async throws {
        try await TestServer.run { server in
            let bytes = Scratch.randomBytes(100_000, seed: 3)
            let connection = try await self.startUpload("flipped", size: UInt64(bytes.count), server: server)
            var frame = RawConnection.encode(.data(DataChunk(ByteBuffer(bytes: bytes))))
            frame[50_000] ^= 0x04
            // In one write: the server closes once it has seen the bad frame, and a later write could find the
            // connection already gone.
            try await connection.send(
                raw: frame
                    + RawConnection.encode(.end(EndOfData(length: UInt64(bytes.count), crc32: CRC32.checksum(bytes))))
            )
            #expect(try await connection.expectError() == .badChecksum)
            #expect(try await connection.next() == nil, "the connection is closed after a protocol violation")
            try await self.waitUntilFolder(server, equals: [])
        }
    }

    @Test func aWrongWholeFileChecksumIsRefusedAndTheConnectionGoesOn() async throws {
        try await TestServer.run { server in
            let bytes = Scratch.randomBytes(10_000, seed: 4)
            let connection = try await self.startUpload("wrong-crc", size: UInt64(bytes.count), server: server)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: bytes))))
            try await connection.send(.end(EndOfData(length: UInt64(bytes.count), crc32: CRC32.checksum(bytes) ^ 1)))
            #expect(try await connection.expectError() == .checksumMismatch)
            try await connection.send(.list)
            guard case .listEnd(let end)? = try await connection.next() else { throw TestFailure("no listing") }
            #expect(end.count == 0)
            #expect(try server.folderContents() == [])
            await connection.close()
        }
    }

    @Test func tooMuchOrTooLittleDataIsALengthMismatch() async throws {
        try await TestServer.run { server in
            // Too much: refused as soon as it overflows; the rest of the upload is dropped.
            let connection = try await self.startUpload("long", size: 10, server: server)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: Array(repeating: 1, count: 11)))))
            #expect(try await connection.expectError() == .lengthMismatch)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: [1]))))
            try await connection.send(.end(EndOfData(length: 12, crc32: 0)))
            // Too little: refused at END.
            try await connection.send(.store(StoreRequest(name: "short", size: 10)))
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
            let nine = Array(repeating: UInt8(2), count: 9)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: nine))))
            try await connection.send(.end(EndOfData(length: 9, crc32: CRC32.checksum(nine))))
            #expect(try await connection.expectError() == .lengthMismatch)
            #expect(try server.folderContents() == [])

            // Too much in an upload large enough to be streamed to disk, a chunk's write still running when the
            // overflow arrives: refused, and nothing left.
            try await connection.send(.store(StoreRequest(name: "large", size: 300_000)))
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
            let chunk = DataChunk(ByteBuffer(bytes: Array(repeating: 3, count: 200_000)))
            try await connection.send(raw: RawConnection.encode(.data(chunk)) + RawConnection.encode(.data(chunk)))
            #expect(try await connection.expectError() == .lengthMismatch)
            try await connection.send(.end(EndOfData(length: 400_000, crc32: 0)))
            try await connection.send(.list)
            guard case .listEnd? = try await connection.next() else { throw TestFailure("the connection broke") }
            #expect(try server.folderContents() == [], "no staging file left")
            await connection.close()
        }
    }

    @Test func abortDropsTheUpload() async throws {
        try await TestServer.run { server in
            let connection = try await self.startUpload("aborted", size: 100, server: server)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: Array(repeating: 7, count: 50)))))
            try await connection.send(.abort)
            #expect(try await connection.expectError() == .aborted)
            #expect(try server.folderContents() == [])
            await connection.close()
        }
    }

    @Test func protocolViolationsGetAnErrorThenTheConnectionCloses() async throws {
        try await TestServer.run { server in
            // A frame too large for the server's limit, rejected after its header.
            var connection = try await RawConnection.handshaken(port: server.port)
            var header = ByteBuffer()
            header.writeInteger(FrameType.data.rawValue)
            header.writeInteger(UInt8(0))
            header.writeInteger(UInt64(1) << 40)
            try await connection.send(raw: Array(header.readableBytesView))
            #expect(try await connection.expectError() == .frameTooLarge)
            #expect(try await connection.next() == nil)

            // DATA without an upload.
            connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: [1, 2, 3]))))
            #expect(try await connection.expectError() == .unexpectedFrame)
            #expect(try await connection.next() == nil)

            // An unknown critical frame type.
            connection = try await RawConnection.handshaken(port: server.port)
            var frame = ByteBuffer()
            FrameSerializer.serialize(Frame(type: FrameType(rawValue: 0x55), payload: ByteBuffer()), into: &frame)
            try await connection.send(raw: Array(frame.readableBytesView))
            #expect(try await connection.expectError() == .unknownFrameType)

            // A server never takes a reply from a client.
            connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.ok)
            #expect(try await connection.expectError() == .unexpectedFrame)

            // A request during an upload is unexpected, also when its name breaks the rules.
            connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.store(StoreRequest(name: "upload", size: 1000)))
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
            try await connection.send(.retrieve(RetrieveRequest(name: "../outside")))
            #expect(try await connection.expectError() == .unexpectedFrame)
            #expect(try await connection.next() == nil)

            // A request in place of HELLO is a bad handshake, also when its name breaks the rules.
            connection = try await RawConnection(port: server.port)
            try await connection.send(raw: Handshake.magic + RawConnection.encode(.list))
            #expect(try await connection.readRaw(count: 8) == Handshake.magic)
            #expect(try await connection.expectError() == .badHandshake)
            connection = try await RawConnection(port: server.port)
            try await connection.send(
                raw: Handshake.magic + RawConnection.encode(.retrieve(RetrieveRequest(name: "../outside")))
            )
            #expect(try await connection.readRaw(count: 8) == Handshake.magic)
            #expect(try await connection.expectError() == .badHandshake)
        }
    }

    @Test func unknownOptionsResumedUploadsAndOversizedFilesAreRefused() async throws {
        var configuration = ServerConfiguration()
        configuration.maximumFileSize = 1000
        try await TestServer.run(configuration: configuration) { server in
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.store(StoreRequest(name: "x", size: 1, options: StoreOptions(rawValue: 0x80))))
            #expect(try await connection.expectError() == .unsupported)
            try await connection.send(.store(StoreRequest(name: "x", size: 10, offset: 5)))
            #expect(try await connection.expectError() == .unsupported)
            try await connection.send(.store(StoreRequest(name: "x", size: 1001)))
            #expect(try await connection.expectError() == .fileTooLarge)
            try await connection.send(.store(StoreRequest(name: "x", size: 1000)))
            guard case .ready? = try await connection.next() else {
                throw TestFailure("a 1000-byte upload was refused")
            }
            await connection.close()
        }
    }

    @Test func anIdleOrStalledConnectionIsClosedWithIdleTimeout() async throws {
        var configuration = ServerConfiguration()
        configuration.idleTimeout = .seconds(2)
        try await TestServer.run(configuration: configuration) { server in
            let idle = try await RawConnection.handshaken(port: server.port)
            #expect(try await idle.expectError() == .idleTimeout)
            #expect(try await idle.next() == nil)

            // Stalled in the middle of a frame.
            let stalled = try await RawConnection(port: server.port)
            try await stalled.send(
                raw: Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))
                    + RawConnection.encode(.list).prefix(6)
            )
            #expect(try await stalled.readRaw(count: 8) == Handshake.magic)
            guard case .hello? = try await stalled.next() else { throw TestFailure("no HELLO") }
            #expect(try await stalled.expectError() == .idleTimeout)
        }
    }

    @Test func aTransferThatKeepsMovingIsNeverIdle() async throws {
        var configuration = ServerConfiguration()
        configuration.idleTimeout = .seconds(2)
        try await TestServer.run(configuration: configuration) { server in
            // 5 s of trickling, two and a half times the timeout, one byte every 100 ms.
            let bytes = Scratch.randomBytes(50, seed: 5)
            let moving = try await self.startUploadTrickling(bytes, server: server)
            #expect(try await moving.next() == .ok)
            #expect(try server.contents(of: "trickle") == bytes)
        }
    }

    /// A peer on a slow link takes every byte of a download, but each of the server's writes (1 MiB pieces sent
    /// from the file's table) takes longer than the idle timeout to complete, and the last MiBs are still on their
    /// way after END: it is never idle, and its EXIT is answered. A peer that stops reading in the middle of a
    /// download is idle, and the server ends that connection.
    @Test func aSlowButSteadyReaderIsNeverIdleAndOneThatStopsReadingIs() async throws {
        var configuration = ServerConfiguration()
        configuration.idleTimeout = .milliseconds(500)
        configuration.lingerTimeout = .milliseconds(200)
        try await TestServer.run(configuration: configuration) { server in
            // Placed, not uploaded: an upload through the in-process client could itself stall for half a second
            // while other tests hold the cooperative threads. The server makes its table before the first download.
            let bytes = Scratch.randomBytes(5 << 20, seed: 11)
            try server.write("slow.bin", bytes)

            // About 1 MB/s, five seconds for the whole file: the socket buffers (about 3 MiB here) fill, and then
            // each 1 MiB piece takes a second to be taken, twice the idle timeout.
            let slow = try await SlowReader.download(
                "slow.bin",
                port: server.port,
                chunk: 8192,
                every: .milliseconds(8)
            )
            // Its last MiBs are still being taken, at the same pace, after END has been handed to the kernel.
            guard slow.messages.last == .ok, case .end(let end)? = slow.messages.dropLast().last else {
                throw TestFailure("the slow download ended with \(String(describing: slow.messages.suffix(2)))")
            }
            #expect(end.length == UInt64(bytes.count))
            #expect(sameBytes(slow.data, bytes))
            #expect(try server.checksumTables() == ["slow.bin"], "sent in 1 MiB pieces from a table")

            // Stops after 64 KiB for four idle timeouts, then reads what is left: the connection has ended.
            let stopped = try await SlowReader.download(
                "slow.bin",
                port: server.port,
                chunk: 4096,
                every: .milliseconds(1),
                stoppingAfter: 64 << 10,
                pause: .seconds(2)
            )
            #expect(stopped.closed, "the server closed a connection that stopped reading")
            #expect(stopped.data.count < bytes.count)
            #expect(!stopped.messages.contains { if case .end = $0 { true } else { false } })
        }
    }

    /// Time the server itself takes to answer (a request it has read but not handled yet: a loaded machine, a slow
    /// disk) is not the client's idleness, even far beyond the idle timeout.
    @Test func aServerSlowToAnswerDoesNotCallItsClientIdle() async throws {
        var configuration = ServerConfiguration()
        configuration.idleTimeout = .milliseconds(300)
        configuration.lingerTimeout = .milliseconds(200)
        let executor = QueueTaskExecutor()
        try await withTaskExecutorPreference(executor) {
            try await TestServer.run(configuration: configuration) { server in
                try server.write("a", [1, 2, 3])
                let connection = try await RawConnection.handshaken(port: server.port)
                // The server's session runs on the executor: held for three idle timeouts with LIST on its way.
                executor.stall(for: .milliseconds(900))
                try await connection.send(.list)
                guard case .listEntries(let entries)? = try await connection.next() else {
                    throw TestFailure("LIST was not answered")
                }
                #expect(entries.map(\.name) == ["a"])
                guard case .listEnd? = try await connection.next() else { throw TestFailure("no LIST_END") }
                // Idle, now: the peer owes the server its next request.
                #expect(try await connection.expectError() == .idleTimeout)
            }
        }
    }

    /// A local file written to while `ferry put` reads it (grown, or rewritten in place) is not stored: what was
    /// sent may mix old and new bytes, which would pass every check.
    @Test(arguments: ["rewritten", "grown"])
    func aFileChangedWhileItIsUploadedIsNotStored(_ change: String) async throws {
        try await TestServer.run { server in
            let source = Scratch.makeDirectory("changing").appendingPathComponent("source")
            try Data(Scratch.randomBytes(8 << 20, seed: 7)).write(to: source)
            // Clear of the clock tick in which the file was written, so that a change shows in its times.
            try await Task.sleep(for: .milliseconds(50))
            var changed = false
            let outcome: Result<UInt64, any Error>
            do {
                outcome = .success(
                    try await server.client.withConnection { connection in
                        try await connection.put(source.path, as: "changing") { done, _ in
                            guard done > 0, !changed, let file = FileHandle(forUpdatingAtPath: source.path) else {
                                return
                            }
                            changed = true
                            if change == "grown" {
                                file.seekToEndOfFile()
                            }
                            file.write(Data([0x23]))
                            try? file.close()
                        }
                    }
                )
            } catch {
                outcome = .failure(error)
            }
            #expect(changed)
            guard case .failure(FerryClientError.localFile(let message)) = outcome else {
                throw TestFailure("the upload ended with \(outcome)")
            }
            #expect(message.contains("changed while being sent"))
            #expect(try server.folderContents() == [], "nothing was stored")
        }
    }

    private func startUploadTrickling(_ bytes: [UInt8], server: TestServer) async throws -> RawConnection {
        let connection = try await self.startUpload("trickle", size: UInt64(bytes.count), server: server)
        for byte in bytes {
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: [byte]))))
            try await Task.sleep(for: .milliseconds(100))
        }
        try await connection.send(.end(EndOfData(length: UInt64(bytes.count), crc32: CRC32.checksum(bytes))))
        return connection
    }

    @Test func clientsBeyondTheLimitAreToldTheServerIsBusy() async throws {
        var configuration = ServerConfiguration()
        configuration.maximumConnections = 2
        try await TestServer.run(configuration: configuration) { server in
            let first = try await RawConnection.handshaken(port: server.port)
            let second = try await RawConnection.handshaken(port: server.port)
            do {
                _ = try await server.client.withConnection { try await $0.list() }
                Issue.record("a third connection was served")
            } catch let error as FerryClientError {
                #expect(error.errorCode == .serverBusy)
                #expect(error.description.contains("server busy"))
            }
            await first.close()
            // Once a slot frees up, clients are served again.
            var served = false
            for _ in 0..<100 where !served {
                served = (try? await server.client.withConnection { try await $0.list() }) != nil
                if !served { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(served)
            await second.close()
        }
    }
}
