import FerryClient
import FerryProtocol
import Foundation
import NIOCore
import Synchronization
import Testing

@testable import FerryServer

#if canImport(Glibc)
import Glibc
#endif

/// What a server meets once deployed: files changing under a download, clients that hold slots or read slowly,
/// signals from supervisors, names chosen to mislead its log.
@Suite("Hostile conditions")
struct HostileConditionsTests {
    /// A file rewritten in place while it is read for a download (too large to be checksummed up front, so read as
    /// it is sent): the client must get 107, never END. Before, old bytes then new ones arrived, every CRC matched
    /// what was read, and the download was reported verified.
    @Test func aFileRewrittenDuringADownloadIsNeverPassedAsVerified() async throws {
        try await TestServer.run { server in
            let size = 80 << 20
            try server.write("big.bin", Scratch.randomBytes(size))
            let path = server.root.appendingPathComponent("big.bin")
            // Rewritten in place once 2 MiB have arrived: same size, new bytes, no truncation (as an editor saving
            // over it might).
            let outcome = try await SlowReader.download(
                "big.bin",
                port: server.port,
                chunk: 64 << 10,
                every: .milliseconds(1),
                stoppingAfter: 2 << 20,
                pause: .milliseconds(100),
                whilePaused: {
                    guard let handle = try? FileHandle(forWritingTo: path) else { return }
                    try? handle.write(contentsOf: Data(Scratch.randomBytes(size)))
                    try? handle.close()
                }
            )
            let messages = outcome.messages
            #expect(!messages.contains { if case .end = $0 { true } else { false } }, "END vouched for a torn file")
            guard case .error(let reply)? = messages.last else {
                Issue.record("the download ended with \(String(describing: messages.last))")
                return
            }
            #expect(reply.code == .storageFailure)
            #expect(reply.message.contains("changed while being sent"))
        }
    }

    /// A file replaced by another under its name (renamed over, as an upload with overwrite does) or removed while it
    /// is sent still goes out whole and verified: its bytes never changed, only its names.
    @Test func aFileReplacedOrRemovedDuringADownloadStillArrivesWhole() async throws {
        try await TestServer.run { server in
            let size = 80 << 20
            let original = Scratch.randomBytes(size)
            for replacement in ["renamed over", "removed", "renamed by RENAME"] {
                try server.write("big.bin", original)
                try server.write("next.bin", [1, 2, 3])
                let root = server.root
                let outcome = try await SlowReader.download(
                    "big.bin",
                    port: server.port,
                    chunk: 64 << 10,
                    every: .milliseconds(1),
                    stoppingAfter: 2 << 20,
                    pause: .milliseconds(100),
                    whilePaused: {
                        if replacement == "renamed by RENAME" {
                            // Through the server itself, which knows the rename is not a write.
                            let done = DispatchSemaphore(value: 0)
                            let client = FerryClient(host: "127.0.0.1", port: server.port)
                            Task {
                                try? await client.withConnection { try await $0.rename("big.bin", to: "moved.bin") }
                                done.signal()
                            }
                            done.wait()
                        } else if replacement == "removed" {
                            unlink(root.appendingPathComponent("big.bin").path)
                        } else {
                            rename(
                                root.appendingPathComponent("next.bin").path,
                                root.appendingPathComponent("big.bin").path
                            )
                        }
                    }
                )
                #expect(outcome.messages.contains { if case .end = $0 { true } else { false } }, "\(replacement)")
                #expect(sameBytes(outcome.data, original), "\(replacement)")
            }
        }
    }

    /// A file truncated while `sendfile` sends it (its pieces already queued): the download ends at once with the
    /// connection's close, instead of NIO retrying an empty `sendfile` at full speed until the idle timeout.
    @Test func aFileTruncatedUnderASendfileDownloadEndsItAtOnce() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("client")
            try Data(Scratch.randomBytes(48 << 20)).write(to: scratch.appendingPathComponent("big"))
            _ = try await server.client.withConnection {
                try await $0.put(scratch.appendingPathComponent("big").path, as: "big")
            }
            #expect(try server.checksumTables() == ["big"], "sent from its table, with sendfile")
            let started = ContinuousClock.now
            let path = server.path("big")
            let result = try await SlowReader.download(
                "big",
                port: server.port,
                chunk: 64 << 10,
                every: .milliseconds(1),
                stoppingAfter: 1 << 20,
                pause: .milliseconds(300),
                whilePaused: { _ = truncate(path, 1 << 20) }
            )

            #expect(result.closed, "the server closed the connection")
            #expect(!result.messages.contains { if case .end = $0 { true } else { false } })
            #expect(ContinuousClock.now - started < .seconds(8), "ended at once, not at a timeout")
        }
    }

    /// A client announces it takes files of at most 1,000 bytes: larger ones are refused with 103 before anything
    /// is sent, whatever path would send them, and the connection stays usable.
    @Test func retrievalsRespectTheClientsMaximumFileSize() async throws {
        try await TestServer.run { server in
            try server.write("small", Array(repeating: 1, count: 500))
            try server.write("medium", Array(repeating: 2, count: 2_000))
            try server.write("large", Scratch.randomBytes(3 << 20))
            let connection = try await RawConnection(port: server.port)
            var hello = FerryConnectionDefaults.hello
            hello.maximumFileSize = 1_000
            try await connection.send(raw: Handshake.magic)
            try await connection.send(.hello(hello))
            _ = try await connection.readRaw(count: 8)
            guard case .hello = try await connection.next() else { throw TestFailure("no HELLO") }
            for name in ["medium", "large"] {
                try await connection.send(.retrieve(RetrieveRequest(name: name)))
                #expect(try await connection.expectError() == .fileTooLarge, "\(name)")
            }
            try await connection.send(.retrieve(RetrieveRequest(name: "small")))
            guard case .fileInfo(let info)? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
            #expect(info.size == 500)
            await connection.close()
        }
    }

    /// One address cannot take every connection slot, and a connection that never completes its handshake is
    /// closed at the handshake deadline, however slowly it keeps sending.
    @Test func oneAddressCannotHoldEverySlot() async throws {
        let configuration = ServerConfiguration(maximumConnectionsPerAddress: 3, handshakeTimeout: .seconds(3))
        try await TestServer.run(configuration: configuration) { server in
            var held: [RawConnection] = []
            for _ in 0..<3 {
                held.append(try await RawConnection.handshaken(port: server.port))
            }
            let refused = try await RawConnection(port: server.port)
            #expect(try await refused.readRaw(count: 8) == Handshake.magic)
            guard case .error(let reply)? = try await refused.next() else { throw TestFailure("no ERROR") }
            #expect(reply.code == .serverBusy)
            #expect(reply.message.contains("from your address"))
            await refused.close()
            await held.removeFirst().close()

            // A slot is free again once the server has seen that close (on a loaded machine that took longer than
            // the 100 ms this test once waited; so it tries again while the server answers busy): a peer that
            // trickles its handshake is still closed at the deadline.
            let bytes = Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))
            var timeout: ErrorReply?
            var elapsed = Duration.zero
            for _ in 0..<20 where timeout == nil {
                let started = ContinuousClock.now
                // One byte every 400 ms: bytes keep coming past the 3 s deadline.
                let answer = try await Self.trickle(bytes, port: server.port, every: .milliseconds(400)).received
                elapsed = ContinuousClock.now - started
                #expect(Array(answer.prefix(8)) == Handshake.magic)
                var parser = FrameParser(maximumPayloadLength: 1 << 16)
                parser.append(bytes: ByteBuffer(bytes: answer.dropFirst(8)))
                guard let frame = try parser.nextFrame(), case .error(let reply) = try Message(decoding: frame) else {
                    throw TestFailure("no ERROR in \(answer)")
                }
                if reply.code == .serverBusy {
                    try await Task.sleep(for: .milliseconds(100))
                } else {
                    timeout = reply
                }
            }
            let closing = try #require(timeout, "the server stayed busy for this address")
            #expect(closing.code == .idleTimeout)
            #expect(closing.message.contains("handshake"))
            #expect(elapsed < .seconds(6))
            for connection in held { await connection.close() }
        }
    }

    /// Sends `prefix` at once and then `bytes` one at a time, `every` apart, from a plain socket, and returns what
    /// the server sent until it closed the connection (or 10 s passed), and whether it did.
    private static func trickle(
        _ bytes: [UInt8],
        after prefix: [UInt8] = [],
        port: Int,
        every interval: Duration
    ) async throws -> (received: [UInt8], closed: Bool) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        let socket = try LoopbackSocket.connect(port: port)
                        defer { close(socket) }
                        var sent = 0
                        while sent < prefix.count {
                            let count = prefix.withUnsafeBytes {
                                send(socket, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL))
                            }
                            guard count > 0 else { throw TestFailure("send: \(errno)") }
                            sent += count
                        }
                        var received: [UInt8] = []
                        var closed = false
                        var buffer = [UInt8](repeating: 0, count: 4096)
                        var next = 0
                        let started = ContinuousClock.now
                        while ContinuousClock.now - started < .seconds(10) {
                            if next < bytes.count {
                                _ = bytes.withUnsafeBytes {
                                    send(socket, $0.baseAddress! + next, 1, Int32(MSG_NOSIGNAL))
                                }
                                next += 1
                            }
                            Thread.sleep(for: interval)
                            let count = buffer.withUnsafeMutableBytes {
                                recv(socket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT))
                            }
                            if count > 0 {
                                received += buffer.prefix(count)
                            } else if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                                closed = true
                                break
                            }
                        }
                        return (received, closed)
                    }
                )
            }
        }
    }

    /// Peers that send most of a large frame and then trickle its last bytes cannot hold the server's memory: frames
    /// over 16 KiB are received only within the server's frame budget, and one that holds part of it must arrive
    /// whole within the idle timeout, however steadily bytes come. Before, each such peer held about 2 MiB for as
    /// long as it trickled (a thousand took a server to nearly 2 GiB).
    @Test func peersThatTrickleLargeFramesAreCutOff() async throws {
        let configuration = ServerConfiguration(idleTimeout: .milliseconds(1500), partialFrameMemory: 3 << 20)
        try await TestServer.run(configuration: configuration) { server in
            let frame = RawConnection.encode(.data(DataChunk(ByteBuffer(bytes: Scratch.randomBytes(1 << 20)))))
            let opening =
                Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))
                + RawConnection.encode(.store(StoreRequest(name: "never", size: 10 << 20)))
                + frame.prefix(frame.count - 64)
            let started = ContinuousClock.now
            let attacks = try await withThrowingTaskGroup(of: (received: [UInt8], closed: Bool).self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        try await Self.trickle(
                            Array(frame.suffix(63)),
                            after: opening,
                            port: server.port,
                            every: .milliseconds(150)
                        )
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for attack in attacks {
                #expect(attack.closed, "a trickling peer was cut off")
                // Cut off at its frame's deadline once it had budget, or told the server is busy if it waited for
                // budget as long as the idle timeout.
                let text = String(decoding: attack.received, as: UTF8.self)
                #expect(
                    text.contains("a frame took longer than") || text.contains("server busy: no room for a frame"),
                    "\(text)"
                )
            }
            #expect(
                attacks.contains { String(decoding: $0.received, as: UTF8.self).contains("a frame took longer than") }
            )
            #expect(ContinuousClock.now - started < .seconds(9.5), "cut off one after the other as budget freed")
            // The budget is whole again: an honest upload of large frames goes through.
            let scratch = Scratch.makeDirectory("client")
            let honest = Scratch.randomBytes(20 << 20)
            try Data(honest).write(to: scratch.appendingPathComponent("honest"))
            _ = try await server.client.withConnection {
                try await $0.put(scratch.appendingPathComponent("honest").path, as: "honest")
            }
            #expect(sameBytes(try server.contents(of: "honest"), honest))
            #expect(try server.folderContents() == ["honest"])
        }
    }

    /// Downloads' chunks all count against one budget: past it, every download gets the small size.
    @Test func theTransferBudgetShrinksChunksForACrowd() {
        let budget = TransferBudget(limit: 4 << 20)
        let bulk = ProtocolLimits.bulkDataChunkLength
        let granted = (0..<10).map { _ in budget.reserve(preferred: bulk) }
        #expect(granted.prefix(4).allSatisfy { $0 == bulk })
        #expect(granted.dropFirst(4).allSatisfy { $0 == 64 * 1024 })
        for length in granted { budget.release(length) }
        #expect(budget.heldBytes == 0)
        #expect(budget.reserve(preferred: 1_000) == 1_000, "a small wish is granted as it is")
    }
}

/// ferryd as a process: signals and its log.
@Suite("ferryd under a supervisor")
struct SupervisedDaemonTests {
    typealias Daemon = CommandLineTests.Daemon

    /// SIGHUP stops ferryd gracefully, like SIGTERM: the upload in flight finishes and nothing is left staged.
    /// Before, SIGHUP's default action killed it on the spot.
    @Test func sighupLetsTheUploadInFlightFinish() async throws {
        let root = Scratch.makeDirectory("library")
        let daemon = try await Daemon.start(root: root, extraArguments: ["--grace-period", "10"])
        let upload = try await RawConnection.handshaken(port: daemon.port)
        let bytes = Scratch.randomBytes(3 << 20)
        try await upload.send(.store(StoreRequest(name: "in-flight", size: UInt64(bytes.count))))
        guard case .ready? = try await upload.next() else { throw TestFailure("no READY") }
        let chunks = stride(from: 0, to: bytes.count, by: 1 << 19).map {
            DataChunk(ByteBuffer(bytes: bytes[$0..<min($0 + (1 << 19), bytes.count)]))
        }
        try await upload.send(.data(chunks[0]))
        kill(daemon.process.processIdentifier, SIGHUP)
        try await Task.sleep(for: .milliseconds(200))
        var transfer = OutgoingTransfer()
        transfer.record(chunks[0])
        for chunk in chunks.dropFirst() {
            try await upload.send(.data(chunk))
            transfer.record(chunk)
        }
        try await upload.send(.end(transfer.end))
        guard case .ok? = try await upload.next() else { throw TestFailure("the upload did not finish") }
        await upload.close()
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationReason == .exit && daemon.process.terminationStatus == 0)
        #expect(try Scratch.libraryContents(root) == ["in-flight"])
    }

    /// The grace period ends downloads sent with `sendfile` too: a slow reader no longer keeps ferryd alive.
    @Test func theGracePeriodEndsASlowSendfileDownload() async throws {
        let root = Scratch.makeDirectory("library")
        let daemon = try await Daemon.start(root: root, extraArguments: ["--grace-period", "1"])
        let scratch = Scratch.makeDirectory("client")
        try Data(Scratch.randomBytes(32 << 20)).write(to: scratch.appendingPathComponent("big"))
        let put = try await Binaries.run(
            "ferry",
            ["put", "big", "--port", "\(daemon.port)"],
            currentDirectory: scratch
        )
        #expect(put.status == 0, "\(put.stderr)")
        // SIGTERM once the slow reader has read its first 256 KiB and paused (3 s: the download is still in flight
        // when the grace period ends). Both are watched from threads of their own, not from this test's tasks, which
        // a loaded test run may hold up for seconds (a stop was measured at 10 s that way).
        let reading = Flag()
        async let slow = SlowReader.download(
            "big",
            port: daemon.port,
            chunk: 16 << 10,
            every: .milliseconds(20),
            stoppingAfter: 256 << 10,
            pause: .seconds(3),
            whilePaused: { reading.set() }
        )
        try await reading.wait()
        #expect(reading.isSet, "the slow download began")
        let process = daemon.process
        let stopTime: Duration = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let stopped = ContinuousClock.now
                process.terminate()
                // Killed if it is still there after 15 s, so that this thread ends either way.
                let watchdog = DispatchWorkItem { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
                DispatchQueue.global().asyncAfter(deadline: .now() + 15, execute: watchdog)
                process.waitUntilExit()
                watchdog.cancel()
                continuation.resume(returning: ContinuousClock.now - stopped)
            }
        }
        #expect(stopTime < .seconds(5), "stopped within the grace period and a little: \(stopTime)")
        let outcome = try await slow
        #expect(!outcome.messages.contains { if case .end = $0 { true } else { false } })
    }

    /// Names come from clients: in the log they are quoted, so they cannot forge fields.
    @Test func namesCannotForgeLogFields() async throws {
        let errors = Pipe()
        let daemon = try await Daemon.start(stderr: errors)
        let connection = try await RawConnection.handshaken(port: daemon.port)
        let name = "x.txt result=ok bytes=123456 operation=EXIT"
        try await connection.send(.retrieve(RetrieveRequest(name: name)))
        #expect(try await connection.expectError() == .noSuchFile)
        await connection.close()
        _ = daemon.stop()
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let line = log.split(separator: "\n").first { $0.contains("operation=RETR") }.map(String.init) ?? ""
        #expect(line.contains("name=\"x.txt result=ok bytes=123456 operation=EXIT\""), "\(log)")
        // Read as logfmt, the line has its own fields and the name whole.
        let fields = Self.logfmtFields(line)
        #expect(fields["operation"] == ["RETR"], "\(line)")
        #expect(fields["bytes"] == ["0"], "\(line)")
        #expect(fields["name"] == [name], "\(line)")
        #expect(fields["result"]?.first?.hasPrefix("error 100") == true, "\(line)")
    }

    /// The `key=value` fields of a logfmt line (values bare or double-quoted with backslash escapes), each key with
    /// every value it was given.
    private static func logfmtFields(_ line: String) -> [String: [String]] {
        var fields: [String: [String]] = [:]
        var characters = line[...]
        while !characters.isEmpty {
            characters = characters.drop { $0 == " " }
            let key = characters.prefix { $0 != "=" && $0 != " " }
            characters = characters.dropFirst(key.count)
            guard characters.first == "=" else {
                characters = characters.drop { $0 != " " }
                continue
            }
            characters = characters.dropFirst()
            var value = ""
            if characters.first == "\"" {
                characters = characters.dropFirst()
                while let character = characters.first, character != "\"" {
                    characters = characters.dropFirst()
                    if character == "\\", let escaped = characters.first {
                        value.append(escaped)
                        characters = characters.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                characters = characters.dropFirst()
            } else {
                value = String(characters.prefix { $0 != " " })
                characters = characters.dropFirst(value.count)
            }
            fields[String(key), default: []].append(value)
        }
        return fields
    }
}
