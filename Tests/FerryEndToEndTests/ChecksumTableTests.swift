import FerryClient
import FerryProtocol
import FerryTransport
import Foundation
import NIOCore
import Testing

@testable import FerryServer

#if canImport(Glibc)
import Glibc
#endif

/// The server keeps each large file's piece CRC-32s (`.ferry-checksums`) and sends later downloads with
/// `sendfile`. These tests hold the tables to what they promise: the bytes a client receives are the file's, with
/// a table, without one, from any offset, after the file was changed behind the server's back, and even when a
/// table lies.
@Suite("Checksum tables: downloads sent from what uploads verified")
struct ChecksumTableTests {
    // MARK: - The table itself

    @Test func aTableSurvivesStorageAndEveryDamagedByteIsRejected() throws {
        let identity = FileIdentity(device: 66, inode: 1234, size: 5, modified: 1_700_000_000_123_456_789, changed: -1)
        let table = ChunkChecksums(
            identity: identity,
            chunks: [.init(length: 3, crc32: CRC32.checksum([1, 2, 3])), .init(length: 2, crc32: 0xDEAD_BEEF)]
        )
        let stored = table.encoded()
        #expect(ChunkChecksums(decoding: stored) == table)
        for index in 0..<stored.readableBytes {
            var damaged = stored
            damaged.setInteger(stored.getInteger(at: index, as: UInt8.self)! ^ 0x01, at: index)
            #expect(ChunkChecksums(decoding: damaged) == nil, "byte \(index) flipped")
        }
        for length in 0..<stored.readableBytes {
            #expect(ChunkChecksums(decoding: stored.getSlice(at: 0, length: length)!) == nil, "cut at \(length)")
        }
    }

    @Test func piecesArrivingInAnySizesAreMergedUpToABulkFrameAndKeepTheirChecksums() throws {
        let bytes = Scratch.randomBytes(5 << 20, seed: 7)
        var generator = SystemRandomNumberGenerator()
        var builder = ChunkChecksumBuilder()
        var position = 0
        while position < bytes.count {
            let length = min(Int.random(in: 1...300_000, using: &generator), bytes.count - position)
            builder.append(length: length, crc32: CRC32.checksum(bytes[position..<position + length]))
            position += length
        }
        let identity = FileIdentity(device: 1, inode: 2, size: UInt64(bytes.count), modified: 3, changed: 4)
        let table = try #require(builder.checksums(for: identity))
        #expect(table.chunks.count < 10, "5 MiB in at most 1 MiB pieces, merged: \(table.chunks.count)")
        var offset = 0
        for chunk in table.chunks {
            #expect(Int(chunk.length) <= ChunkChecksums.maximumChunkLength)
            #expect(chunk.crc32 == CRC32.checksum(bytes[offset..<offset + Int(chunk.length)]))
            offset += Int(chunk.length)
        }
        #expect(offset == bytes.count)
        let combined = table.chunks.reduce(0) { CRC32.combine($0, $1.crc32, secondLength: UInt64($1.length)) }
        #expect(combined == CRC32.checksum(bytes), "the pieces' CRC-32s make the whole file's")
        var shorter = identity
        shorter.size -= 1
        #expect(builder.checksums(for: shorter) == nil, "a table covers its file exactly")
    }

    @Test func piecesStartOnlyOnABoundaryAndWithinThePeersLimit() throws {
        let identity = FileIdentity(device: 1, inode: 2, size: 300, modified: 3, changed: 4)
        let table = ChunkChecksums(
            identity: identity,
            chunks: [.init(length: 100, crc32: 1), .init(length: 200, crc32: 2)]
        )
        #expect(table.pieces(from: 0, within: 1000)?.map(\.offset) == [0, 100])
        #expect(table.pieces(from: 100, within: 1000) == [ChecksummedPiece(offset: 100, length: 200, crc32: 2)])
        #expect(table.pieces(from: 300, within: 1000) == [])
        #expect(table.pieces(from: 50, within: 1000) == nil)
        #expect(table.pieces(from: 301, within: 1000) == nil)
        #expect(table.pieces(from: 0, within: 150) == nil)
    }

    // MARK: - Over the wire

    @Test func anUploadLeavesATableAndDownloadsFromItAreIdenticalFromEveryOffset() async throws {
        let bytes = Scratch.randomBytes(3 << 20 + 7, seed: 3)
        try await TestServer.run { server in
            try await self.upload(bytes, as: "big.bin", to: server)
            #expect(try server.checksumTables() == ["big.bin"])
            #expect(try await sameBytes(self.download("big.bin", from: server), bytes))
            // On a piece boundary (sent from the table), inside a piece (read and checksummed), at the very end.
            for offset in [ChunkChecksums.maximumChunkLength, 12_345, bytes.count] {
                #expect(
                    try await sameBytes(
                        self.retrieve("big.bin", offset: offset, port: server.port),
                        Array(bytes[offset...])
                    )
                )
            }
            // A peer that accepts only 64 KiB frames cannot take the table's 1 MiB pieces: read and checksummed.
            #expect(
                try await sameBytes(
                    self.retrieve("big.bin", offset: 0, port: server.port, maximumPayload: 64 << 10),
                    bytes
                )
            )
        }
    }

    @Test func aFilePlacedInTheLibraryAndInThePageCacheGetsItsTableBeforeItsFirstDownload() async throws {
        let bytes = Scratch.randomBytes(2 << 20 + 1, seed: 4)
        try await TestServer.run { server in
            try server.write("placed.bin", bytes)
            #expect(try server.checksumTables() == [])
            // Even a download from an offset: the table is made of the whole file, read from the page cache.
            #expect(try await self.retrieve("placed.bin", offset: 4096, port: server.port) == Array(bytes[4096...]))
            #expect(try server.checksumTables() == ["placed.bin"])
            #expect(try await sameBytes(self.download("placed.bin", from: server), bytes))
            let boundary = ChunkChecksums.maximumChunkLength
            #expect(
                try await self.retrieve("placed.bin", offset: boundary, port: server.port) == Array(bytes[boundary...])
            )
        }
    }

    /// Not in the page cache, the file is read while it is sent, and a whole download leaves the table.
    @Test func aFilePlacedInTheLibraryOnDiskGetsItsTableOnItsFirstWholeDownload() async throws {
        let bytes = Scratch.randomBytes(2 << 20 + 1, seed: 4)
        try await TestServer.run(root: Scratch.makeDirectory("library", onDisk: true)) { server in
            try server.write("placed.bin", bytes)
            try #require(
                Self.evictFromPageCache(server.path("placed.bin")),
                "the scratch folder must be on a file system whose pages can be dropped (not tmpfs)"
            )
            #expect(try await self.retrieve("placed.bin", offset: 4096, port: server.port) == Array(bytes[4096...]))
            #expect(try server.checksumTables() == [], "a partial download checksummed only part of the file")
            #expect(try await sameBytes(self.download("placed.bin", from: server), bytes))
            #expect(try server.checksumTables() == ["placed.bin"])
            #expect(try await sameBytes(self.download("placed.bin", from: server), bytes))
        }
    }

    @Test func aFileChangedBehindTheServersBackIsNotSentFromItsOldTable() async throws {
        let original = Scratch.randomBytes(2 << 20, seed: 5)
        let replacement = Scratch.randomBytes(2 << 20, seed: 6)
        try await TestServer.run { server in
            try await self.upload(original, as: "doc.bin", to: server)
            #expect(try server.checksumTables() == ["doc.bin"])
            // Same size, same modification time, new bytes written in place: only the status-change time differs.
            let path = server.path("doc.bin")
            var before = stat()
            #expect(stat(path, &before) == 0)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.write(contentsOf: Data(replacement))
            try handle.close()
            let times = [before.st_atim, before.st_mtim]
            #expect(utimensat(AT_FDCWD, path, times, 0) == 0)
            var after = stat()
            #expect(stat(path, &after) == 0)
            #expect(after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec)
            #expect(after.st_size == before.st_size)
            #expect(try await sameBytes(self.download("doc.bin", from: server), replacement))
        }
    }

    @Test func aTableThatLiesFailsTheDownloadInsteadOfPassingBadData() async throws {
        let bytes = Scratch.randomBytes(2 << 20, seed: 8)
        try await TestServer.run { server in
            try await self.upload(bytes, as: "target.bin", to: server)
            // A table that matches the file but not its bytes (as if the file had been altered undetectably).
            let tablePath = server.root.appendingPathComponent(".ferry-checksums/target.bin")
            let stored = try Data(contentsOf: tablePath)
            let table = try #require(ChunkChecksums(decoding: ByteBuffer(bytes: stored)))
            var chunks = table.chunks
            chunks[1].crc32 ^= 0x0000_0100
            try Data(ChunkChecksums(identity: table.identity, chunks: chunks).encoded().readableBytesView)
                .write(to: tablePath)
            let scratch = Scratch.makeDirectory("client")
            let copy = scratch.appendingPathComponent("copy")
            await #expect(throws: FerryClientError.self) {
                try await server.client.withConnection { try await $0.get("target.bin", to: copy.path) }
            }
            #expect(!FileManager.default.fileExists(atPath: copy.path), "nothing is kept of a failed download")
            #expect(try sameBytes(server.contents(of: "target.bin"), bytes), "the stored file is untouched")
        }
    }

    /// Another program truncates a file while the server is sending it from its table (a piece may already be
    /// queued for `sendfile`, which then has nothing to send): that download ends, with an ERROR or a closed
    /// connection and never with END, within the idle timeout, and the server goes on serving.
    @Test func aFileTruncatedWhileItIsSentEndsThatDownloadOnly() async throws {
        var configuration = ServerConfiguration()
        configuration.idleTimeout = .seconds(2)
        let bytes = Scratch.randomBytes(64 << 20, seed: 9)
        try await TestServer.run(configuration: configuration) { server in
            try await self.upload(bytes, as: "shrinking.bin", to: server)
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(.retrieve(RetrieveRequest(name: "shrinking.bin")))
            try await connection.setReading(false)
            // Not reading for a while: the sockets fill up and the server waits with a piece queued.
            try await Task.sleep(for: .milliseconds(500))
            #expect(truncate(server.path("shrinking.bin"), 1 << 20) == 0)
            try await connection.setReading(true)
            guard case .fileInfo? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
            let started = ContinuousClock.now
            var ending = "closed"
            reading: while true {
                switch try await connection.next() {
                case .data?: continue
                case .end?:
                    ending = "END"
                    break reading
                case .error(let reply)?:
                    ending = "ERROR \(reply.code.rawValue)"
                    break reading
                case nil: break reading
                case let other?:
                    ending = "\(other)"
                    break reading
                }
            }
            #expect(ending != "END", "a download of a file that shrank was completed")
            #expect(ContinuousClock.now - started < .seconds(15), "ended by \(ending)")
            await connection.close()
            let listing = try await server.client.withConnection { try await $0.list() }
            #expect(listing.map(\.size) == [1 << 20], "the server goes on serving")
        }
    }

    // MARK: - Helpers

    /// Writes the file's pages to the disk and drops them from the page cache; whether its first page is gone.
    private static func evictFromPageCache(_ path: String) -> Bool {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0, posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED) == 0 else { return false }
        guard let mapping = mmap(nil, 4096, PROT_READ, MAP_SHARED, descriptor, 0),
            mapping != UnsafeMutableRawPointer(bitPattern: -1)
        else { return false }
        defer { munmap(mapping, 4096) }
        var residency: UInt8 = 1
        return mincore(mapping, 4096, &residency) == 0 && residency & 1 == 0
    }

    private func upload(_ bytes: [UInt8], as name: String, to server: TestServer) async throws {
        let source = Scratch.makeDirectory("client").appendingPathComponent("source")
        try Data(bytes).write(to: source)
        _ = try await server.client.withConnection { try await $0.put(source.path, as: name) }
    }

    private func download(_ name: String, from server: TestServer) async throws -> [UInt8] {
        let copy = Scratch.makeDirectory("client").appendingPathComponent("copy")
        _ = try await server.client.withConnection { try await $0.get(name, to: copy.path) }
        return [UInt8](try Data(contentsOf: copy))
    }

    /// RETR from `offset` over a raw connection, checking FILE_INFO, every frame (the parser checks each CRC),
    /// and END's length and CRC-32 against the bytes received.
    private func retrieve(
        _ name: String,
        offset: Int,
        port: Int,
        maximumPayload: UInt64 = 1 << 20
    ) async throws -> [UInt8] {
        let connection = try await RawConnection.handshaken(port: port, maximumFramePayload: maximumPayload)
        do {
            let received = try await self.retrieve(
                name,
                offset: offset,
                over: connection,
                maximumPayload: maximumPayload
            )
            await connection.close()
            return received
        } catch {
            await connection.close()
            throw error
        }
    }

    private func retrieve(
        _ name: String,
        offset: Int,
        over connection: RawConnection,
        maximumPayload: UInt64
    ) async throws -> [UInt8] {
        try await connection.send(.retrieve(RetrieveRequest(name: name, offset: UInt64(offset))))
        guard case .fileInfo(let info)? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
        #expect(info.offset == UInt64(offset))
        var received: [UInt8] = []
        while true {
            switch try await connection.next() {
            case .data(let chunk)?:
                #expect(chunk.bytes.readableBytes <= Int(maximumPayload))
                received += Array(chunk.bytes.readableBytesView)
            case .end(let end)?:
                #expect(end.length == UInt64(received.count))
                #expect(end.crc32 == CRC32.checksum(received))
                #expect(UInt64(received.count) == info.size - UInt64(offset))
                return received
            case let other:
                throw TestFailure("unexpected \(String(describing: other))")
            }
        }
    }
}
