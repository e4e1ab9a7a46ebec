import FerryProtocol
import Foundation
import NIOCore
import Testing

/// Version 3's fields on the wire, against peers of every version: a version 3 session resumes under its condition
/// and proves the whole file at END; a version 2 (or 1) peer gets exactly the older layout, and a condition it might
/// send anyway is ignored, as SPEC.md §10 says of appended fields.
@Suite("Resuming across versions")
struct ResumeCompatibilityTests {
    static let file = Array("0123456789abcdefghij".utf8)

    /// A hand-driven client of `version` asking for `file` from byte 5 under `condition`: FILE_INFO and END.
    private static func retrieve(
        version: UInt16,
        condition: FileVersion?,
        from server: TestServer
    ) async throws -> (FileInfo, EndOfData) {
        var hello = FerryConnectionDefaults.hello
        hello.maximumVersion = version
        let connection = try await RawConnection(port: server.port)
        do {
            let answer = try await Self.retrieve(over: connection, hello: hello, condition: condition)
            await connection.close()
            return answer
        } catch {
            await connection.close()
            throw error
        }
    }

    private static func retrieve(
        over connection: RawConnection,
        hello: Hello,
        condition: FileVersion?
    ) async throws -> (FileInfo, EndOfData) {
        try await connection.send(raw: Handshake.magic + RawConnection.encode(.hello(hello)))
        _ = try await connection.readRaw(count: 8)
        guard case .hello = try await connection.next() else { throw TestFailure("no HELLO") }
        try await connection.send(.retrieve(RetrieveRequest(name: "f", offset: 5, ifUnchanged: condition)))
        guard case .fileInfo(let info) = try await connection.next() else { throw TestFailure("no FILE_INFO") }
        var end: EndOfData?
        while end == nil {
            switch try await connection.next() {
            case .data: continue
            case .end(let last): end = last
            case let other: throw TestFailure("unexpected \(String(describing: other))")
            }
        }
        return (info, try #require(end))
    }

    @Test func eachVersionGetsItsOwnLayout() async throws {
        try await TestServer.run { server in
            try server.write("f", Self.file)
            let whole = CRC32.checksum(Self.file)
            let rest = CRC32.checksum(Self.file[5...])

            // Version 3, no condition: from 5, and the whole file's CRC at END.
            let (plain, plainEnd) = try await Self.retrieve(version: 3, condition: nil, from: server)
            #expect(plain.offset == 5 && plainEnd.length == 15 && plainEnd.crc32 == rest)
            #expect(plainEnd.fileCRC32 == whole)

            // Version 3, the right condition (the version FILE_INFO just named): from 5.
            let current = FileVersion(size: plain.size, modified: plain.modified)
            let (kept, keptEnd) = try await Self.retrieve(version: 3, condition: current, from: server)
            #expect(kept.offset == 5 && keptEnd.fileCRC32 == whole)

            // Version 3, a condition naming another version: the whole file.
            let stale = FileVersion(size: plain.size, modified: plain.modified - 1)
            let (again, againEnd) = try await Self.retrieve(version: 3, condition: stale, from: server)
            #expect(
                again.offset == 0 && againEnd.length == 20 && againEnd.crc32 == whole && againEnd.fileCRC32 == whole
            )

            // Version 2 and 1: the condition is ignored, and END has no third field.
            for version: UInt16 in [1, 2] {
                let (old, oldEnd) = try await Self.retrieve(version: version, condition: stale, from: server)
                #expect(old.offset == 5 && oldEnd.crc32 == rest, "version \(version)")
                #expect(oldEnd.fileCRC32 == nil && RawConnection.encode(.end(oldEnd)).count == 14 + 12)
            }
        }
    }
}
