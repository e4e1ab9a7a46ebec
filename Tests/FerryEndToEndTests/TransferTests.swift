import FerryClient
import FerryProtocol
import FerryServer
import Foundation
import NIOPosix
import Testing

@Suite("Uploads and downloads, byte for byte")
struct TransferTests {
    /// Uploads `bytes` with the client library, downloads them again, and checks every copy.
    private func roundTrip(_ bytes: [UInt8], name: String, server: TestServer) async throws {
        let scratch = Scratch.makeDirectory("client")
        let source = scratch.appendingPathComponent("source")
        let copy = scratch.appendingPathComponent("copy")
        try Data(bytes).write(to: source)
        let stored = try await server.client.withConnection { try await $0.put(source.path, as: name) }
        #expect(stored == UInt64(bytes.count))
        #expect(try sameBytes(server.contents(of: name), bytes), "the stored file is identical")
        let received = try await server.client.withConnection { try await $0.get(name, to: copy.path) }
        #expect(received == UInt64(bytes.count))
        #expect(try sameBytes([UInt8](Data(contentsOf: copy)), bytes), "the downloaded file is identical")
    }

    @Test func emptyOneByteAndSixtyFourMebibyteFiles() async throws {
        try await TestServer.run { server in
            try await self.roundTrip([], name: "empty", server: server)
            try await self.roundTrip([0x23], name: "one", server: server)
            try await self.roundTrip(Scratch.randomBytes(64 << 20, seed: 64), name: "random-64MiB.bin", server: server)
            #expect(try server.folderContents() == ["empty", "one", "random-64MiB.bin"], "no staging left behind")
        }
    }

    /// A session runs on the event loop that reads its socket, before and after the thread pool has written a large
    /// download's chunks behind it (several writes of several 1 MiB chunks, and a last one shorter than the rest);
    /// with `runsSessionsOnEventLoop` cleared, it does not.
    @Test func aSessionRunsOnItsEventLoopWhileItsDownloadIsWrittenBehindIt() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            try await TestServer.run { server in
                let bytes = Scratch.randomBytes((17 << 20) + 12_345, seed: 17)
                try server.write("large.bin", bytes)
                var client = server.client
                client.eventLoopGroup = group
                let copy = Scratch.makeDirectory("client").appendingPathComponent("copy").path
                let (before, received, after) = try await client.withConnection { connection in
                    let before = loop.inEventLoop
                    let received = try await connection.get("large.bin", to: copy)
                    return (before, received, loop.inEventLoop)
                }
                #expect(before, "the session starts on its channel's loop")
                #expect(after, "and stays there once its writes are done")
                #expect(received == UInt64(bytes.count))
                #expect(try sameBytes([UInt8](Data(contentsOf: URL(fileURLWithPath: copy))), bytes))

                client.runsSessionsOnEventLoop = false
                let elsewhere = try await client.withConnection { _ in !loop.inEventLoop }
                #expect(elsewhere, "cleared, the session runs on the global executor")
            }
        } catch {
            try await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    @Test func theOldEndMarkerAtEveryPositionAroundChunkBoundaries() async throws {
        let chunk = ProtocolLimits.defaultDataChunkLength
        let length = 2 * chunk + 7
        let positions = [0, 1, chunk - 2, chunk - 1, chunk, chunk + 1, 2 * chunk - 1, length - 3, length - 2]
        try await TestServer.run { server in
            for position in positions {
                var bytes = Scratch.randomBytes(length, seed: UInt64(position))
                bytes[position] = UInt8(ascii: "#")
                bytes[position + 1] = UInt8(ascii: "#")
                try await self.roundTrip(bytes, name: "hashes-at-\(position)", server: server)
            }
            // A file that is nothing but the marker, and one that ends with it exactly at a chunk boundary.
            try await self.roundTrip(Array("##".utf8), name: "only-marker", server: server)
            var ending = Scratch.randomBytes(chunk, seed: 9)
            ending[chunk - 2] = UInt8(ascii: "#")
            ending[chunk - 1] = UInt8(ascii: "#")
            try await self.roundTrip(ending, name: "ends-with-marker", server: server)
        }
    }

    @Test func everyByteValueSurvives() async throws {
        try await TestServer.run { server in
            try await self.roundTrip(
                (0..<(256 * 1024 + 1)).map { UInt8(truncatingIfNeeded: $0) },
                name: "bytes",
                server: server
            )
        }
    }

    @Test func listShowsSizesAndTimesSortedAndHidesWhatIsNotAFile() async throws {
        try await TestServer.run { server in
            let empty = try await server.client.withConnection { try await $0.list() }
            #expect(empty.isEmpty, "an empty library is an empty list, not an error")
            try server.write("b.txt", Array("hello".utf8))
            try server.write("a.txt", [])
            try server.write("Z", [1, 2, 3])
            try server.write(".hidden", [1])
            try FileManager.default.createDirectory(atPath: server.path("folder"), withIntermediateDirectories: false)
            let entries = try await server.client.withConnection { try await $0.list() }
            #expect(entries.map(\.name) == ["Z", "a.txt", "b.txt"])
            #expect(entries.map(\.size) == [3, 0, 5])
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            #expect(entries.allSatisfy { abs($0.modified - now) < 60_000_000_000 })
        }
    }

    @Test func aLargeListingSpansSeveralFrames() async throws {
        try await TestServer.run { server in
            let names = (0..<3_000).map { "file-\(String(repeating: "x", count: 100))-\($0)" }
            for name in names {
                try server.write(name, [])
            }
            let entries = try await server.client.withConnection { try await $0.list() }
            #expect(entries.map(\.name) == names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        }
    }

    /// The server reuses a listing while nothing in the folder changed; anything done to the folder behind its
    /// back (a new file, a removed one, a file rewritten in place, a changed time) shows in the next listing.
    @Test func changesMadeBehindTheServersBackShowInTheNextListing() async throws {
        try await TestServer.run { server in
            try server.write("a", [1, 2, 3])
            try server.write("b", [1])
            try await server.client.withConnection { connection in
                #expect(try await connection.list().map(\.name) == ["a", "b"])
                #expect(try await connection.list().map(\.name) == ["a", "b"], "the same, from the cache")

                try server.write("c", [])
                #expect(try await connection.list().map(\.name) == ["a", "b", "c"])
                try FileManager.default.removeItem(atPath: server.path("b"))
                #expect(try await connection.list().map(\.name) == ["a", "c"])

                let handle = try #require(FileHandle(forWritingAtPath: server.path("a")))
                try handle.seekToEnd()
                try handle.write(contentsOf: Data([4, 5]))
                try handle.close()
                #expect(try await connection.list().first?.size == 5, "a file grown in place")

                let past = Date(timeIntervalSince1970: 1_000_000_000)
                try FileManager.default.setAttributes([.modificationDate: past], ofItemAtPath: server.path("c"))
                let entry = try #require(try await connection.list().last)
                #expect(entry.modified == 1_000_000_000_000_000_000, "a file whose time was set")
            }
        }
    }

    /// An unchanged listing is sent from its cached encoding, which holds for clients that accept the same
    /// frames: one with a smaller frame limit gets the same listing in smaller LIST_ENTRIES frames.
    @Test func aCachedListingIsSentWithinEachClientsFrameLimit() async throws {
        try await TestServer.run { server in
            // About 112 KB of entries: several frames at 64 KiB, one at the default limit.
            let names = (0..<4_000).map { "entry-\($0 + 10_000)" }
            for name in names {
                try server.write(name, [])
            }
            for _ in 0..<2 {
                #expect(try await server.client.withConnection { try await $0.list() }.map(\.name) == names)
            }
            let limit = UInt64(ProtocolLimits.minimumFramePayload)
            let connection = try await RawConnection.handshaken(port: server.port, maximumFramePayload: limit)
            try await connection.send(.list)
            var listed: [String] = []
            var frames = 0
            while case .listEntries(let entries)? = try await connection.next() {
                let payload = ListEntry.batchHeaderLength + entries.reduce(0) { $0 + $1.encodedLength }
                #expect(payload <= Int(limit))
                listed += entries.map(\.name)
                frames += 1
            }
            #expect(listed == names)
            #expect(frames > 1)
            await connection.close()
            #expect(try await server.client.withConnection { try await $0.list() }.map(\.name) == names)
        }
    }

    @Test func uploadsMakeTheStagingFolderAgainIfItWasRemoved() async throws {
        try await TestServer.run { server in
            let staging = server.root.appendingPathComponent(".ferry-staging")
            try FileManager.default.removeItem(at: staging)
            let scratch = Scratch.makeDirectory("client")
            let small = Scratch.randomBytes(1_000, seed: 21)
            let large = Scratch.randomBytes(3 << 20, seed: 22)
            try Data(small).write(to: scratch.appendingPathComponent("small"))
            try Data(large).write(to: scratch.appendingPathComponent("large"))
            // A small upload (committed with its group) and a large one (streamed to a staging file of its own).
            try await server.client.withConnection {
                _ = try await $0.put(scratch.appendingPathComponent("small").path, as: "small")
            }
            try FileManager.default.removeItem(at: staging)
            try await server.client.withConnection {
                _ = try await $0.put(scratch.appendingPathComponent("large").path, as: "large")
            }
            #expect(try sameBytes(server.contents(of: "small"), small))
            #expect(try sameBytes(server.contents(of: "large"), large))
            #expect(try server.folderContents() == ["large", "small"])
        }
    }

    @Test func existingFilesAreKeptUnlessOverwriteIsAsked() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("client")
            let source = scratch.appendingPathComponent("new")
            try Data("new".utf8).write(to: source)
            try server.write("kept", Array("old".utf8))
            await #expect(throws: FerryClientError.self) {
                try await server.client.withConnection { try await $0.put(source.path, as: "kept") }
            }
            do {
                try await server.client.withConnection { _ = try await $0.put(source.path, as: "kept") }
            } catch let error as FerryClientError {
                #expect(error.errorCode == .fileExists)
            }
            #expect(try server.contents(of: "kept") == Array("old".utf8))
            try await server.client.withConnection { _ = try await $0.put(source.path, as: "kept", overwrite: true) }
            #expect(try server.contents(of: "kept") == Array("new".utf8))
        }
    }

    @Test func aDownloadNeverTouchesAnExistingLocalFileWithoutForce() async throws {
        try await TestServer.run { server in
            try server.write("remote", Array("remote".utf8))
            let scratch = Scratch.makeDirectory("client")
            let target = scratch.appendingPathComponent("local")
            try Data("local".utf8).write(to: target)
            await #expect(throws: FerryClientError.self) {
                try await server.client.withConnection { try await $0.get("remote", to: target.path) }
            }
            #expect(try Data(contentsOf: target) == Data("local".utf8))
            try await server.client.withConnection { _ = try await $0.get("remote", to: target.path, overwrite: true) }
            #expect(try Data(contentsOf: target) == Data("remote".utf8))
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["local"], "no temporary left")
        }
    }

    @Test func aMissingFileIsNoSuchFileAndTheConnectionStaysUsable() async throws {
        try await TestServer.run { server in
            try server.write("there", [1])
            let scratch = Scratch.makeDirectory("client")
            try await server.client.withConnection { connection in
                do {
                    try await connection.get("missing", to: scratch.appendingPathComponent("x").path)
                    Issue.record("a missing file was downloaded")
                } catch let error as FerryClientError {
                    #expect(error.errorCode == .noSuchFile)
                }
                #expect(try await connection.list().map(\.name) == ["there"])
            }
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty,
                "nothing written locally"
            )
        }
    }

    @Test func aClientThatStopsSendingStillGetsItsAnswers() async throws {
        try await TestServer.run { server in
            try server.write("f", [1, 2, 3])
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.retrieve(RetrieveRequest(name: "f")))
            try await connection.send(.list)
            try await connection.finishSending()
            guard case .fileInfo? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
            guard case .data(let chunk)? = try await connection.next() else { throw TestFailure("no DATA") }
            #expect(Array(chunk.bytes.readableBytesView) == [1, 2, 3])
            guard case .end? = try await connection.next() else { throw TestFailure("no END") }
            guard case .listEntries(let entries)? = try await connection.next() else { throw TestFailure("no list") }
            #expect(entries.map(\.name) == ["f"])
            guard case .listEnd? = try await connection.next() else { throw TestFailure("no LIST_END") }
            #expect(try await connection.next() == nil, "then the server closes")
        }
    }

    /// Streamed (larger than a DATA frame) and sent from memory (smaller): the same answers.
    @Test(arguments: [300_000, 3_000])
    func retrFromAnOffsetSendsTheRestWithItsOwnChecksum(size: Int) async throws {
        try await TestServer.run { server in
            let bytes = Scratch.randomBytes(size, seed: 3)
            let offset = size / 3
            try server.write("file", bytes)
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.retrieve(RetrieveRequest(name: "file", offset: UInt64(offset))))
            guard case .fileInfo(let info)? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
            #expect(info.size == UInt64(size) && info.offset == UInt64(offset))
            var received: [UInt8] = []
            while case .data(let chunk)? = try await connection.next() {
                received += Array(chunk.bytes.readableBytesView)
                if received.count == size - offset { break }
            }
            guard case .end(let end)? = try await connection.next() else { throw TestFailure("no END") }
            #expect(received == Array(bytes[offset...]))
            #expect(end == EndOfData(length: UInt64(size - offset), crc32: CRC32.checksum(bytes[offset...])))
            try await connection.send(.retrieve(RetrieveRequest(name: "file", offset: UInt64(size + 1))))
            #expect(try await connection.expectError() == .invalidOffset)
            await connection.close()
        }
    }

    /// A server may accept frames as small as 64 KiB (SPEC.md §4): a file sent whole in one DATA frame must then fit
    /// that limit too, not the client's own 256 KiB.
    @Test func uploadsKeepWithinTheServersFrameLimit() async throws {
        var configuration = ServerConfiguration()
        configuration.maximumFramePayload = Int(ProtocolLimits.minimumFramePayload)
        try await TestServer.run(configuration: configuration) { server in
            try await self.roundTrip(Scratch.randomBytes(100 * 1024, seed: 100), name: "between-limits", server: server)
            try await self.roundTrip(Scratch.randomBytes(300 * 1024, seed: 300), name: "streamed", server: server)
            let scratch = Scratch.makeDirectory("several")
            let paths = (0..<3).map { scratch.appendingPathComponent("f\($0)").path }
            for (index, path) in paths.enumerated() {
                try Data(Scratch.randomBytes(90 * 1024, seed: UInt64(index))).write(to: URL(fileURLWithPath: path))
            }
            var outcomes: [Result<UInt64, FerryClientError>] = []
            try await server.client.withConnection { connection in
                try await connection.put(paths.enumerated().map { .init(source: $1, name: "f\($0)") }) {
                    outcomes.append($1)
                }
            }
            #expect(outcomes.count == 3 && outcomes.allSatisfy { (try? $0.get()) == 90 * 1024 }, "\(outcomes)")
        }
    }

    /// A name may take all 255 bytes a file name can have; the download's temporary name beside it must not need
    /// more.
    @Test func theLongestNamesDownload() async throws {
        let long = String(repeating: "é", count: 125) + "name!"
        #expect(long.utf8.count == 255)
        try await TestServer.run { server in
            try await self.roundTrip(Scratch.randomBytes(1000, seed: 1), name: long, server: server)
            try await self.roundTrip(
                Scratch.randomBytes(600 * 1024, seed: 2),
                name: "b" + long.dropFirst(),
                server: server
            )
            let mirror = Scratch.makeDirectory("mirror")
            var outcomes: [Result<UInt64, FerryClientError>] = []
            try await server.client.withConnection { connection in
                let files = try await connection.list()
                try await connection.get(
                    files.map { .init(name: $0.name, destination: mirror.appendingPathComponent($0.name).path) }
                ) {
                    outcomes.append($1)
                }
            }
            #expect(outcomes.count == 2 && outcomes.allSatisfy { (try? $0.get()) != nil }, "\(outcomes)")
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: mirror.path).count == 2,
                "no temporary file left"
            )
        }
    }
}
