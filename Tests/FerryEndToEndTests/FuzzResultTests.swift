import FerryClient
import Foundation
import NIOCore
import Testing

/// Replays what the fuzzers found (`Fuzz/FailCases/`) over real sockets, and asserts the typed error each input now
/// produces, not just that nothing crashed.
///
/// The client harness's inputs are kept as transcripts (`FailCases/FuzzClientReplies.transcripts/`, written by the
/// harness with `FERRY_FUZZ_TRANSCRIPT`): the operations byte, then the bytes the fake server sends. Every transcript
/// must have an expectation here and every expectation a transcript, so a new crasher cannot be added untested.
@Suite("Fuzzer findings")
struct FuzzResultTests {
    /// The error each kept input must end in, by file name.
    static let expectations: [String: Expected] = [
        // 90 KB of DATA-shaped frames where the magic should be: a stranger, recognised at the handshake. The
        // harness crashed once on it in the Swift runtime after 252,707 executions (see FailCases/README.md).
        "crash-9c723d03987306847213a2d0e912dab214e10be5": .notAFerryServer,
        // Two uploads, a small one sent whole and a large one streamed, and a server whose bytes break the protocol
        // after HELLO: the connection failed while the small one's answer was awaited, and the large file's handle,
        // already open, was dropped open (NIO traps on that, in release builds too).
        "crash-c765eeecae6206ced5c4cdb4e8cf2dcf47685bdd": .connectionLost,
    ]

    enum Expected {
        case notAFerryServer
        case protocolViolation
        case connectionLost
    }

    static let transcripts = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/FailCases/FuzzClientReplies.transcripts")

    @Test func everyTranscriptHasAnExpectationAndEveryExpectationATranscript() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.transcripts.path)
        #expect(Set(names) == Set(Self.expectations.keys))
    }

    @Test(arguments: expectations.keys.sorted())
    func theClientEndsTheReplayWithTheExpectedErrorAndLeavesNothing(_ name: String) async throws {
        let bytes = try [UInt8](Data(contentsOf: Self.transcripts.appendingPathComponent(name)))
        let operations = try #require(bytes.first)
        let expected = try #require(Self.expectations[name])
        let folder = Scratch.makeDirectory("fuzz-replay")
        let upload = folder.appendingPathComponent("upload.bin")
        let uploadBytes = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try uploadBytes.write(to: upload)
        let large = folder.appendingPathComponent("large.bin")
        let largeBytes = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        try largeBytes.write(to: large)
        let records = folder.appendingPathComponent(".uploads").path
        let target = folder.appendingPathComponent("target").path

        let listener = try await TextListener.start(reply: ByteBuffer(bytes: bytes.dropFirst()))
        var failures: [FerryClientError] = []
        do {
            try await FerryClient(host: "127.0.0.1", port: listener.port).withConnection { client in
                // The same operations, in the same order, as the harness ran.
                for step in 0..<4 {
                    do {
                        switch (operations >> (2 * step)) & 3 {
                        case 0: _ = try await client.list()
                        case 1: _ = try await client.get("file", to: target)
                        case 2:
                            try await client.put(
                                [
                                    .init(source: upload.path, name: "remote"),
                                    .init(source: large.path, name: "remote-large"),
                                ],
                                resume: ResumePolicy(keptUploadsFolder: records),
                                completed: { _, _ in }
                            )
                        default: _ = try await client.get("file", to: target, overwrite: true)
                        }
                    } catch let error as FerryClientError {
                        failures.append(error)
                    }
                }
            }
        } catch let error as FerryClientError {
            failures.append(error)
        }
        await listener.stop()

        let first = try #require(failures.first, "the replay succeeded")
        switch (expected, first) {
        case (.notAFerryServer, .notAFerryServer), (.protocolViolation, .protocolViolation),
            (.connectionLost, .connectionLost):
            break
        default:
            Issue.record("expected \(expected), got \(first)")
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["large.bin", "upload.bin"]
        )
        #expect(try Data(contentsOf: upload) == uploadBytes)
        #expect(try Data(contentsOf: large) == largeBytes)
    }
}
