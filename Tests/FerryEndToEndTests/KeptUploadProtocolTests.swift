import FerryProtocol
import FerryServer
import Foundation
import NIOCore
import Testing

/// Resumable uploads on the wire (protocol version 4, SPEC.md §7.3), driven by hand: what a token resumes and for
/// whom, and the offsets, ENDs and races a hostile or broken client may send. Nothing of it ever commits a file that
/// is not the client's, whole.
@Suite("Resumable uploads on the wire")
struct KeptUploadProtocolTests {
    private static let size = 1 << 20
    private static let bytes = Scratch.randomBytes(size, seed: 40)

    /// A version 4 connection.
    private static func connect(_ server: TestServer) async throws -> RawConnection {
        try await RawConnection.handshaken(port: server.port, maximumVersion: 4)
    }

    /// Begins an upload of `name`, sends its first `sent` bytes as one DATA frame, and cuts the connection; returns the
    /// token, once the server has kept the upload.
    private static func cutUpload(_ name: String, sent: Int, _ server: TestServer) async throws -> UploadToken {
        let connection = try await Self.connect(server)
        try await connection.send(.store(StoreRequest(name: name, size: UInt64(Self.size))))
        guard case .ready(let ready)? = try await connection.next(), let token = ready.token else {
            throw TestFailure("no READY with a token")
        }
        #expect(ready.offset == 0)
        try await connection.send(.data(DataChunk(ByteBuffer(bytes: Self.bytes[..<sent]))))
        await connection.close()
        // Kept once its record says so.
        let kept = server.root.appendingPathComponent(".ferry-staging/.kept")
        for _ in 0..<200 {
            let records = ((try? FileManager.default.contentsOfDirectory(atPath: kept.path)) ?? [])
                .filter { $0.hasSuffix(".upload") }
                .compactMap { try? String(contentsOf: kept.appendingPathComponent($0), encoding: .utf8) }
            if records.contains(where: { $0.contains("kept \(sent)\n") && $0.contains("name \(name)\n") }) { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        return token
    }

    /// Sends STOR with `token` allowing `offset`, and returns READY.
    private static func resume(
        _ connection: RawConnection,
        _ name: String,
        token: UploadToken,
        offset: UInt64 = UInt64(size)
    ) async throws -> Ready {
        try await connection.send(
            .store(StoreRequest(name: name, size: UInt64(Self.size), offset: offset, resumeToken: token))
        )
        guard case .ready(let ready)? = try await connection.next() else { throw TestFailure("no READY") }
        return ready
    }

    /// Sends the rest from `offset` and END, with `fileCRC32` (the whole file's, by default).
    private static func finish(
        _ connection: RawConnection,
        from offset: Int,
        fileCRC32: UInt32?? = .none
    ) async throws -> Message? {
        let rest = Self.bytes[offset...]
        if !rest.isEmpty {
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: rest))))
        }
        let whole = fileCRC32 ?? CRC32.checksum(Self.bytes)
        try await connection.send(
            .end(EndOfData(length: UInt64(rest.count), crc32: CRC32.checksum(rest), fileCRC32: whole))
        )
        return try await connection.next()
    }

    @Test func aTokenResumesItsUploadWhereTheVerifiedBytesEnd() async throws {
        try await TestServer.run { server in
            let token = try await Self.cutUpload("file", sent: 300_000, server)
            let connection = try await Self.connect(server)
            let ready = try await Self.resume(connection, "file", token: token)
            #expect(ready == Ready(offset: 300_000, token: token))
            #expect(try await Self.finish(connection, from: 300_000) == .ok)
            #expect(try server.contents(of: "file") == Self.bytes)
            #expect(try server.folderContents() == ["file"])
            // Asked again (its OK lost, say), the same token says it is done: READY at the end, then OK for an END
            // with the whole file's CRC, and nothing more is written.
            let again = try await Self.resume(connection, "file", token: token)
            #expect(again == Ready(offset: UInt64(Self.size), token: token))
            #expect(try await Self.finish(connection, from: Self.size) == .ok)
            #expect(try server.folderContents() == ["file"])
        }
    }

    @Test func aTokenIsBoundToItsNameAndSizeAndAnOffsetOfZeroStartsAgain() async throws {
        try await TestServer.run { server in
            let token = try await Self.cutUpload("mine", sent: 300_000, server)
            let connection = try await Self.connect(server)
            // Another name with the token: a new upload with a new token, the kept one untouched.
            let other = try await Self.resume(connection, "yours", token: token)
            #expect(other.offset == 0 && other.token != nil && other.token != token)
            #expect(try await Self.finish(connection, from: 0) == .ok)
            // A forged token: a new upload.
            let forged = try await Self.resume(connection, "mine", token: UploadToken(high: 1, low: 2))
            #expect(forged.offset == 0 && forged.token != token)
            try await connection.send(.abort)
            #expect(try await connection.expectError() == .aborted)
            // Offset 0 with the token: the kept bytes are dropped, and the upload starts again under it.
            let restarted = try await Self.resume(connection, "mine", token: token, offset: 0)
            #expect(restarted == Ready(offset: 0, token: token))
            #expect(try await Self.finish(connection, from: 0) == .ok)
            #expect(try server.contents(of: "mine") == Self.bytes)
        }
    }

    @Test func tokensAreBoundToTheAccountThatBeganTheUpload() async throws {
        try await TestServer.run(configuration: AccountsTests.configuration()) { server in
            func logIn(_ user: String) async throws -> RawConnection {
                let connection = try await Self.connect(server)
                try await connection.send(.auth(AuthRequest(user: user, password: "\(user)-secret")))
                #expect(try await connection.next() == .ok)
                return connection
            }
            let alice = try await logIn("alice")
            try await alice.send(.store(StoreRequest(name: "plans", size: UInt64(Self.size))))
            guard case .ready(let ready)? = try await alice.next(), let token = ready.token else {
                throw TestFailure("no token")
            }
            try await alice.send(.data(DataChunk(ByteBuffer(bytes: Self.bytes[..<300_000]))))
            await alice.close()
            let kept = server.root.appendingPathComponent(".ferry-staging/.kept")
            for _ in 0..<200 {
                let records = ((try? FileManager.default.contentsOfDirectory(atPath: kept.path)) ?? [])
                    .filter { $0.hasSuffix(".upload") }
                if !records.isEmpty { break }
                try await Task.sleep(for: .milliseconds(25))
            }
            // uma (upload permission) presents alice's token: a new upload of her own, nothing of alice's.
            let uma = try await logIn("uma")
            let stolen = try await Self.resume(uma, "plans", token: token)
            #expect(stolen.offset == 0 && stolen.token != token)
            try await uma.send(.abort)
            #expect(try await uma.expectError() == .aborted)
            // alice herself resumes.
            let back = try await logIn("alice")
            #expect(try await Self.resume(back, "plans", token: token) == Ready(offset: 300_000, token: token))
            #expect(try await Self.finish(back, from: 300_000) == .ok)
            #expect(try server.contents(of: "plans") == Self.bytes)
        }
    }

    @Test func hostileOffsetsAndEndsAreRefusedAndCommitNothing() async throws {
        try await TestServer.run { server in
            let token = try await Self.cutUpload("file", sent: 300_000, server)
            let connection = try await Self.connect(server)
            // An offset without a token, and one past the size.
            try await connection.send(.store(StoreRequest(name: "file", size: UInt64(Self.size), offset: 5)))
            #expect(try await connection.expectError() == .unsupported)
            try await connection.send(
                .store(
                    StoreRequest(
                        name: "file",
                        size: UInt64(Self.size),
                        offset: UInt64(Self.size) + 1,
                        resumeToken: token
                    )
                )
            )
            #expect(try await connection.expectError() == .invalidOffset)
            // A resumed END without the whole file's CRC cannot be proven whole.
            #expect(try await Self.resume(connection, "file", token: token).offset == 300_000)
            guard case .error(let missing)? = try await Self.finish(connection, from: 300_000, fileCRC32: .some(nil))
            else { throw TestFailure("a resumed END without file_crc was accepted") }
            #expect(missing.code == .checksumMismatch)
            #expect(try server.folderContents() == [], "refused, and the kept part dropped")

            // A wrong whole-file CRC: refused, and the kept part is dropped rather than resumed again.
            let second = try await Self.cutUpload("file", sent: 300_000, server)
            #expect(try await Self.resume(connection, "file", token: second).offset == 300_000)
            guard case .error(let wrong)? = try await Self.finish(connection, from: 300_000, fileCRC32: 0xDEAD_BEEF)
            else { throw TestFailure("a wrong file_crc was accepted") }
            #expect(wrong.code == .checksumMismatch)
            #expect(try server.folderContents() == [])
            #expect(try await Self.resume(connection, "file", token: second).offset == 0, "nothing kept")
            await connection.close()
        }
    }

    @Test func anUploadBeingReceivedCannotBeResumedTwice() async throws {
        try await TestServer.run { server in
            let token = try await Self.cutUpload("file", sent: 300_000, server)
            let first = try await Self.connect(server)
            #expect(try await Self.resume(first, "file", token: token).offset == 300_000)
            let second = try await Self.connect(server)
            try await second.send(
                .store(
                    StoreRequest(name: "file", size: UInt64(Self.size), offset: UInt64(Self.size), resumeToken: token)
                )
            )
            #expect(try await second.expectError() == .uploadInProgress)
            #expect(try await Self.finish(first, from: 300_000) == .ok)
            #expect(try server.contents(of: "file") == Self.bytes)
        }
    }

    @Test func aVersionThreeSessionIgnoresTokensAndKeepsNothing() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection.handshaken(port: server.port, maximumVersion: 3)
            try await connection.send(
                .store(StoreRequest(name: "old", size: UInt64(Self.size), resumeToken: UploadToken(high: 3, low: 4)))
            )
            #expect(try await connection.next() == .ready(Ready(offset: 0)), "no token in a version 3 READY")
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: Self.bytes[..<300_000]))))
            await connection.close()
            for _ in 0..<200 where try !server.folderContents().isEmpty {
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(try server.folderContents() == [], "a cut version 3 upload keeps nothing")
        }
    }

    @Test func anUploadCutBeforeOneFramesWorthIsNotKept() async throws {
        try await TestServer.run { server in
            let connection = try await Self.connect(server)
            try await connection.send(.store(StoreRequest(name: "short", size: UInt64(Self.size))))
            guard case .ready(let ready)? = try await connection.next() else { throw TestFailure("no READY") }
            #expect(ready.token != nil)
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: Self.bytes[..<100_000]))))
            await connection.close()
            for _ in 0..<200 where try !server.folderContents().isEmpty {
                try await Task.sleep(for: .milliseconds(25))
            }
            #expect(try server.folderContents() == [], "100,000 bytes are not worth keeping (nor a flood of them)")
        }
    }
}
