import FerryProtocol
import Foundation
import NIOCore
import Testing

/// Decodes every hex test vector in SPEC.md, so the specification and the code cannot drift apart.
///
/// A vector is a fenced block whose info string is `hex vector=NAME` (optionally `reject=KIND`). Every vector in
/// the spec must be known here, and every vector known here must be in the spec.
@Suite("SPEC.md test vectors")
struct SpecVectorTests {
    /// What each valid vector decodes to: a list of messages (empty for a frame a receiver skips).
    static let expected: KeyValuePairs<String, [Message]> = [
        "hello-client": [
            .hello(Hello(minimumVersion: 1, maximumVersion: 1, maximumFramePayload: 1 << 20, maximumFileSize: .max))
        ],
        "hello-server": [
            .hello(Hello(minimumVersion: 1, maximumVersion: 1, maximumFramePayload: 1 << 20, maximumFileSize: 1 << 40))
        ],
        "list": [.list],
        "retr": [.retrieve(RetrieveRequest(name: "notes.txt"))],
        "retr-resume": [.retrieve(RetrieveRequest(name: "notes.txt", offset: 4096))],
        "stor": [.store(StoreRequest(name: "photo.jpg", size: 3, options: .overwrite))],
        "exit": [.exit],
        "ok": [.ok],
        "error": [.error(ErrorReply(code: .noSuchFile, message: "no such file: 'missing.txt'"))],
        "list-entries": [
            .listEntries([
                ListEntry(name: "a.txt", size: 5, modified: 1_700_000_000_000_000_000),
                ListEntry(name: "é", size: 0, modified: 0),
            ])
        ],
        "list-end": [.listEnd(ListEnd(count: 2))],
        "file-info": [.fileInfo(FileInfo(size: 3, offset: 0, modified: 1_700_000_000_000_000_000))],
        "ready": [.ready(Ready(offset: 0))],
        "data": [.data(DataChunk(ByteBuffer(string: "##\n")))],
        "end": [.end(EndOfData(length: 3, crc32: CRC32.checksum(Array("##\n".utf8))))],
        "abort": [.abort],
        "stor-pipelined": [
            .store(StoreRequest(name: "photo.jpg", size: 3, options: .overwrite)),
            .data(DataChunk(ByteBuffer(string: "##\n"))),
            .end(EndOfData(length: 3, crc32: CRC32.checksum(Array("##\n".utf8)))),
        ],
        "optional-extension": [],
        "delete": [.delete(DeleteRequest(name: "old.txt"))],
        "rename": [.rename(RenameRequest(from: "old.txt", to: "new.txt", options: .overwrite))],
        "error-permission": [.error(ErrorReply(code: .permissionDenied, message: "DELETE needs full permission"))],
        "auth": [.auth(AuthRequest(user: "alice", password: "s3cret"))],
        "hello-server-login": [
            .hello(
                Hello(
                    minimumVersion: 1,
                    maximumVersion: 2,
                    maximumFramePayload: 1 << 20,
                    maximumFileSize: 1 << 40,
                    login: .required
                )
            )
        ],
        "error-auth": [.error(ErrorReply(code: .authenticationFailed, message: "wrong user name or password"))],
        "retr-conditional": [
            .retrieve(
                RetrieveRequest(
                    name: "notes.txt",
                    offset: 4096,
                    ifUnchanged: FileVersion(size: 10_000, modified: 1_700_000_000_000_000_000)
                )
            )
        ],
        "stor-resume": [
            .store(
                StoreRequest(
                    name: "video.mp4",
                    size: 10_000_000,
                    offset: 10_000_000,
                    resumeToken: UploadToken(hex: "00112233445566778899aabbccddeeff")
                )
            )
        ],
        "ready-token": [
            .ready(Ready(offset: 4_194_304, token: UploadToken(hex: "00112233445566778899aabbccddeeff")))
        ],
        "error-upload-in-progress": [
            .error(
                ErrorReply(
                    code: .uploadInProgress,
                    message: "upload in progress on another connection; try again shortly"
                )
            )
        ],
        "end-resumed": [
            .end(
                EndOfData(
                    length: 3,
                    crc32: CRC32.checksum(Array("##\n".utf8)),
                    fileCRC32: CRC32.checksum([0x89] + Array("PNG##\n".utf8))
                )
            )
        ],
        "error-tls-required": [
            .error(
                ErrorReply(
                    code: .tlsRequired,
                    message: "this server speaks Ferry inside TLS only: connect with TLS (ferry --tls)"
                )
            )
        ],
    ]

    /// What each corrupted vector must be rejected with, by a receiver whose frame limit is 1 MiB.
    static let rejected: KeyValuePairs<String, FerryProtocolError.Kind> = [
        "corrupt-crc": .badChecksum,
        "corrupt-type": .badChecksum,
        "corrupt-data": .badChecksum,
        "too-large": .frameTooLarge,
        "unknown-critical": .unknownFrameType,
    ]

    struct Vector {
        var name: String
        var reject: String?
        var bytes: [UInt8]
    }

    static func vectorsInSpec() throws -> [Vector] {
        let specURL = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SPEC.md")
        let text = try String(contentsOf: specURL, encoding: .utf8)
        var vectors: [Vector] = []
        var current: Vector?
        var hex = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if var vector = current {
                if trimmed == "```" {
                    vector.bytes = try Self.bytes(fromHex: hex, vector: vector.name)
                    vectors.append(vector)
                    current = nil
                    hex = ""
                } else {
                    hex += " " + trimmed
                }
            } else if trimmed.hasPrefix("```hex") {
                let attributes = Dictionary(
                    trimmed.dropFirst(6).split(separator: " ").compactMap { field -> (String, String)? in
                        let parts = field.split(separator: "=", maxSplits: 1)
                        return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
                    },
                    uniquingKeysWith: { $1 }
                )
                let name = try #require(attributes["vector"], "a ```hex block without vector=: \(trimmed)")
                current = Vector(name: name, reject: attributes["reject"], bytes: [])
            }
        }
        return vectors
    }

    static func bytes(fromHex hex: String, vector: String) throws -> [UInt8] {
        let digits = hex.filter { !$0.isWhitespace }
        try #require(digits.count % 2 == 0, "vector \(vector) has an odd number of hex digits")
        var bytes: [UInt8] = []
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            bytes.append(try #require(UInt8(digits[index..<next], radix: 16), "vector \(vector): bad hex"))
            index = next
        }
        return bytes
    }

    /// The frame as SPEC.md shows it: header, payload in rows of 16, CRC.
    static func render(_ bytes: [UInt8]) -> String {
        func row(_ slice: ArraySlice<UInt8>) -> String {
            slice.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }
                .joined(separator: " ")
        }
        var lines = [row(bytes.prefix(FrameLayout.headerLength))]
        let payload = bytes.dropFirst(FrameLayout.headerLength).dropLast(FrameLayout.trailerLength)
        for start in stride(from: payload.startIndex, to: payload.endIndex, by: 16) {
            lines.append(row(payload[start..<min(start + 16, payload.endIndex)]))
        }
        lines.append(row(bytes.suffix(FrameLayout.trailerLength)))
        return lines.joined(separator: "\n")
    }

    @Test func theMagicInTheSpecIsTheMagicInTheCode() throws {
        let magic = try #require(try Self.vectorsInSpec().first { $0.name == "magic" })
        #expect(magic.bytes == Handshake.magic)
    }

    @Test func everyValidVectorDecodesToItsMessageAndReencodesIdentically() throws {
        let vectors = try Self.vectorsInSpec()
        for (name, messages) in Self.expected {
            guard let vector = vectors.first(where: { $0.name == name }) else {
                let encoded = messages.isEmpty ? [] : SampleMessages.encoded(messages[0])
                Issue.record("SPEC.md lacks vector \(name):\n```hex vector=\(name)\n\(Self.render(encoded))\n```")
                continue
            }
            #expect(vector.reject == nil)
            let decoded = try FrameParser.decodeAll(vector.bytes, pieces: [vector.bytes.count])
            #expect(decoded == messages, "vector \(name)")
            if !messages.isEmpty {
                let encoded = messages.flatMap { SampleMessages.encoded($0) as [UInt8] }
                #expect(encoded == vector.bytes, "vector \(name) should read:\n\(Self.render(encoded))")
            }
            // The same bytes, one at a time.
            #expect(try FrameParser.decodeAll(vector.bytes, pieces: [1]) == messages)
        }
    }

    @Test func everyCorruptedVectorIsRejectedWithItsError() throws {
        let vectors = try Self.vectorsInSpec()
        for (name, kind) in Self.rejected {
            let vector = try #require(vectors.first { $0.name == name }, "SPEC.md lacks vector \(name)")
            #expect(vector.reject == "\(kind)", "vector \(name) names reject=\(vector.reject ?? "nothing")")
            let error = Self.firstError(decoding: vector.bytes)
            #expect(error?.kind == kind, "vector \(name): \(String(describing: error))")
        }
    }

    /// Decodes `bytes` as a receiver with a 1 MiB frame limit would, returning what stopped it.
    static func firstError(decoding bytes: [UInt8]) -> FerryProtocolError? {
        var parser = FrameParser(maximumPayloadLength: ProtocolLimits.defaultMaximumFramePayload)
        parser.append(bytes: ByteBuffer(bytes: bytes))
        do {
            while let frame = try parser.nextFrame() {
                _ = try Message(decoding: frame)
            }
            return nil
        } catch {
            return error
        }
    }

    @Test func theSpecHasNoVectorTheTestsDoNotKnow() throws {
        let known = Set(Self.expected.map(\.key) + Self.rejected.map(\.key) + ["magic"])
        for vector in try Self.vectorsInSpec() {
            #expect(known.contains(vector.name), "SPEC.md vector \(vector.name) is not checked by the tests")
        }
        #expect(try Self.vectorsInSpec().count == known.count, "each vector appears exactly once")
    }
}
