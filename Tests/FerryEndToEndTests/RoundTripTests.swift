import FerryClient
import FerryProtocol
import Foundation
import NIOCore
import Testing

/// What a session costs in round trips (issue #18's latency benchmark): each test's server withholds its answers
/// until the client has sent what it may send without waiting, so a client that waited instead would stall.
@Suite("Round trips")
struct RoundTripTests {
    /// The client's greeting: magic and HELLO, as ``FerryConnection`` sends it.
    private static let greetingLength =
        Handshake.magic.count
        + RawConnection.encode(
            .hello(
                Hello(
                    minimumVersion: Handshake.supportedVersions.lowerBound,
                    maximumVersion: Handshake.supportedVersions.upperBound,
                    maximumFramePayload: UInt64(ProtocolLimits.defaultMaximumFramePayload),
                    maximumFileSize: .max
                )
            )
        ).count

    private static let serverGreeting = Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))

    /// `body`, or a failure after `limit` (a client waiting for an answer that is withheld would wait for its idle
    /// timeout, a minute).
    private static func within<Result: Sendable>(
        _ limit: Duration,
        _ body: @escaping @Sendable () async throws -> Result
    ) async throws -> Result {
        try await withThrowingTaskGroup(of: Result?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            defer { group.cancelAll() }
            guard let result = try await group.next() ?? nil else {
                throw TestFailure("still waiting after \(limit)")
            }
            return result
        }
    }

    /// What a batch `operation` on a connection to `port` reports for each file, within 20 s.
    private static func outcomes(
        port: Int,
        _ operation:
            @escaping @Sendable (
                FerryConnection, _ completed: (Int, Result<UInt64, FerryClientError>) -> Void
            ) async throws -> Void
    ) async throws -> [Int: Result<UInt64, FerryClientError>] {
        try await Self.within(.seconds(20)) {
            try await FerryClient(port: port).withConnection { connection in
                var outcomes: [Int: Result<UInt64, FerryClientError>] = [:]
                try await operation(connection) { outcomes[$0] = $1 }
                return outcomes
            }
        }
    }

    /// `ferry list`'s LIST goes out with the greeting (SPEC.md §4): the server's HELLO and the listing can then come
    /// back together, one round trip after the connection.
    @Test func listIsSentWithTheGreeting() async throws {
        let listing =
            RawConnection.encode(.listEntries([ListEntry(name: "a.txt", size: 3, modified: 0)]))
            + RawConnection.encode(.listEnd(ListEnd(count: 1)))
        let server = try await TextListener.start(
            script: [
                (
                    after: Self.greetingLength + RawConnection.encode(.list).count,
                    reply: ByteBuffer(bytes: Self.serverGreeting + listing)
                )
            ],
            closing: false
        )
        defer { Task { await server.stop() } }
        let port = server.port
        let entries = try await Self.within(.seconds(20)) {
            try await FerryClient(port: port).withConnection(sendingEarly: .list) { connection, sent in
                #expect(sent)
                return try await connection.list(alreadyRequested: sent)
            }
        }
        #expect(entries.map(\.name) == ["a.txt"])
        // The same through the command, whose session also ends without waiting for an OK to its EXIT.
        let started = ContinuousClock.now
        let list = try await Binaries.run("ferry", ["list", "--port", "\(port)"])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("a.txt"), "\(list.stdout)")
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    /// A session ends once its last answer is in: the OK to EXIT is not waited for (SPEC.md §7.4 lets a client close
    /// between requests), so a server that never sends it costs nothing.
    @Test func aSessionEndsWithoutWaitingForTheOKToItsExit() async throws {
        let server = try await TextListener.start(
            script: [
                (after: 0, reply: ByteBuffer(bytes: Self.serverGreeting)),
                (
                    after: Self.greetingLength + 1,
                    reply: ByteBuffer(bytes: RawConnection.encode(.listEnd(ListEnd(count: 0))))
                ),
            ],
            closing: false
        )
        defer { Task { await server.stop() } }
        let port = server.port
        let started = ContinuousClock.now
        let entries = try await Self.within(.seconds(20)) {
            try await FerryClient(port: port).withConnection { try await $0.list() }
        }
        #expect(entries.isEmpty)
        #expect(ContinuousClock.now - started < .seconds(10))
    }

    /// `get` of many files keeps far more than 32 RETRs in flight (it kept 32 before issue #18): here the server
    /// answers none of 300 until all 300 have arrived.
    @Test func getKeepsHundredsOfRequestsInFlight() async throws {
        let names = (0..<300).map { "file-\($0).txt" }
        let requests = names.reduce(0) { $0 + RawConnection.encode(.retrieve(RetrieveRequest(name: $1))).count }
        let refusals = names.flatMap { name in
            RawConnection.encode(.error(ErrorReply(code: .noSuchFile, message: "no such file: '\(name)'")))
        }
        let server = try await TextListener.start(
            script: [
                (after: 0, reply: ByteBuffer(bytes: Self.serverGreeting)),
                (after: Self.greetingLength + requests, reply: ByteBuffer(bytes: refusals)),
            ],
            closing: false
        )
        defer { Task { await server.stop() } }
        let port = server.port
        let folder = Scratch.makeDirectory("round-trips")
        let downloads = names.map {
            FerryConnection.Download(name: $0, destination: folder.appendingPathComponent($0).path)
        }
        let outcomes = try await Self.outcomes(port: port) { connection, completed in
            try await connection.get(downloads, completed: completed)
        }
        #expect(outcomes.count == names.count)
        #expect(
            outcomes.values.allSatisfy {
                if case .failure(.refused(let reply)) = $0 { reply.code == .noSuchFile } else { false }
            }
        )
    }

    /// `put` of many small files keeps far more than 96 uploads unanswered (it kept 96 before issue #18): here the
    /// server answers none of 300 until all 300 have arrived.
    @Test func putKeepsHundredsOfUploadsUnanswered() async throws {
        let folder = Scratch.makeDirectory("round-trip-uploads")
        let names = (0..<300).map { "up-\($0).txt" }
        var uploads: [UInt8] = []
        for name in names {
            let bytes = Array("\(name)\n".utf8)
            try Data(bytes).write(to: folder.appendingPathComponent(name))
            let chunk = DataChunk(ByteBuffer(bytes: bytes))
            var transfer = OutgoingTransfer()
            transfer.record(chunk)
            uploads += RawConnection.encode(.store(StoreRequest(name: name, size: UInt64(bytes.count))))
            uploads += RawConnection.encode(.data(chunk)) + RawConnection.encode(.end(transfer.end))
        }
        let answers = names.flatMap { _ in
            RawConnection.encode(.ready(Ready(offset: 0))) + RawConnection.encode(.ok)
        }
        let server = try await TextListener.start(
            script: [
                (after: 0, reply: ByteBuffer(bytes: Self.serverGreeting)),
                (after: Self.greetingLength + uploads.count, reply: ByteBuffer(bytes: answers)),
            ],
            closing: false
        )
        defer { Task { await server.stop() } }
        let port = server.port
        let files = names.map {
            FerryConnection.Upload(source: folder.appendingPathComponent($0).path, name: $0)
        }
        let outcomes = try await Self.outcomes(port: port) { connection, completed in
            try await connection.put(files, completed: completed)
        }
        #expect(outcomes.count == names.count)
        #expect(outcomes.values.allSatisfy { (try? $0.get()) != nil })
    }
}
