import FerryClient
import FerryProtocol
import Foundation
import NIOCore
import Testing

@Suite("Names, links and strangers")
struct NameAndHandshakeTests {
    static let badNames: [[UInt8]] = [
        Array("../x".utf8), Array("/etc/passwd".utf8), Array("a/b".utf8), Array(".hidden".utf8), Array("..".utf8),
        Array("a\\b".utf8), Array("tab\tname".utf8), Array("new\nline".utf8), [0x61, 0x00], [0xFF, 0xFE],
        Array(repeating: UInt8(ascii: "n"), count: 300), [],
    ]

    /// A RETR or STOR frame carrying raw name bytes, which the client library would refuse to build.
    private func request(_ type: FrameType, name: [UInt8]) -> [UInt8] {
        var payload = ByteBuffer()
        if type == .store {
            payload.writeInteger(UInt64(1))
            payload.writeInteger(UInt64(0))
            payload.writeInteger(UInt8(0))
        } else {
            payload.writeInteger(UInt64(0))
        }
        payload.writeInteger(UInt16(name.count))
        payload.writeBytes(name)
        var frame = ByteBuffer()
        FrameSerializer.serialize(Frame(type: type, payload: payload), into: &frame)
        return Array(frame.readableBytesView)
    }

    @Test func traversalAndBadNamesAreRefusedWithTheRuleAndTheConnectionGoesOn() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection.handshaken(port: server.port)
            for name in Self.badNames {
                for type in [FrameType.retrieve, .store] {
                    try await connection.send(raw: self.request(type, name: name))
                    guard case .error(let reply)? = try await connection.next() else {
                        throw TestFailure("no error for \(name)")
                    }
                    #expect(reply.code == .invalidName)
                    #expect(reply.message.contains("a name must"), "the message names the rule: \(reply.message)")
                }
            }
            try await connection.send(.list)
            guard case .listEnd? = try await connection.next() else { throw TestFailure("the connection broke") }
            #expect(try server.folderContents() == [])
            #expect(
                !FileManager.default.fileExists(
                    atPath: server.root.deletingLastPathComponent().appendingPathComponent("x").path
                )
            )
            await connection.close()
        }
    }

    @Test func theClientRefusesBadNamesBeforeSending() async throws {
        try await TestServer.run { server in
            try await server.client.withConnection { connection in
                for name in ["../x", "/etc/passwd", ".hidden", ""] {
                    do {
                        try await connection.get(name, to: "/tmp/never")
                        Issue.record("\(name) was requested")
                    } catch let error as FerryClientError {
                        guard case .invalidName = error else { throw error }
                    }
                }
            }
        }
    }

    @Test func aSymlinkInTheLibraryLeadsNowhere() async throws {
        try await TestServer.run { server in
            let outside = Scratch.makeDirectory("outside").appendingPathComponent("secret")
            try Data("secret".utf8).write(to: outside)
            try FileManager.default.createSymbolicLink(atPath: server.path("link"), withDestinationPath: outside.path)
            try FileManager.default.createSymbolicLink(atPath: server.path("etc"), withDestinationPath: "/etc/passwd")

            let connection = try await RawConnection.handshaken(port: server.port)
            for name in ["link", "etc"] {
                try await connection.send(.retrieve(RetrieveRequest(name: name)))
                #expect(try await connection.expectError() == .noSuchFile)
            }
            try await connection.send(.list)
            guard case .listEnd(let end)? = try await connection.next() else { throw TestFailure("no listing") }
            #expect(end.count == 0, "links are not listed")
            // Uploading onto the link's name never writes through it.
            let bytes: [UInt8] = Array("new".utf8)
            try await connection.send(.store(StoreRequest(name: "link", size: 3)))
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: bytes))))
            try await connection.send(.end(EndOfData(length: 3, crc32: CRC32.checksum(bytes))))
            #expect(try await connection.expectStoreRefusal() == .fileExists)
            try await connection.send(.store(StoreRequest(name: "link", size: 3, options: .overwrite)))
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
            try await connection.send(.data(DataChunk(ByteBuffer(bytes: bytes))))
            try await connection.send(.end(EndOfData(length: 3, crc32: CRC32.checksum(bytes))))
            #expect(try await connection.next() == .ok)
            #expect(try Data(contentsOf: outside) == Data("secret".utf8), "the link's target is untouched")
            #expect(try server.contents(of: "link") == bytes, "the link itself was replaced by a regular file")
            await connection.close()
        }
    }

    @Test(arguments: ["LIST", "RETR x", "STOR y", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
    func theOldProtocolAndOtherStrangersGetAReadableError(_ greeting: String) async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection(port: server.port)
            try await connection.send(raw: Array(greeting.utf8))
            let reply = String(decoding: try await connection.readToEnd(), as: UTF8.self)
            #expect(reply == Handshake.notFerryReply)
        }
    }

    @Test func aVersionTheServerDoesNotSpeakIsRefusedAfterItsMagic() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection(port: server.port)
            try await connection.send(raw: Handshake.magic)
            try await connection.send(
                .hello(
                    Hello(
                        minimumVersion: Handshake.supportedVersions.upperBound + 1,
                        maximumVersion: 9,
                        maximumFramePayload: 1 << 20,
                        maximumFileSize: 0
                    )
                )
            )
            #expect(try await connection.readRaw(count: 8) == Handshake.magic)
            #expect(try await connection.expectError() == .versionMismatch)
            #expect(try await connection.next() == nil)
        }
    }

    @Test func aFirstFrameThatIsNotHelloIsABadHandshake() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection(port: server.port)
            try await connection.send(raw: Handshake.magic + RawConnection.encode(.list))
            #expect(try await connection.readRaw(count: 8) == Handshake.magic)
            #expect(try await connection.expectError() == .badHandshake)
        }
    }

    @Test func theClientRecognisesAServerThatIsNotFerry() async throws {
        // A listener that answers every connection with a line of text, as the old server or an HTTP server would.
        let listener = try await TextListener.start(reply: "HTTP/1.0 400 Bad Request\r\n\r\n")
        do {
            _ = try await FerryClient(host: "127.0.0.1", port: listener.port).withConnection { try await $0.list() }
            Issue.record("a text server was taken for Ferry")
        } catch let error as FerryClientError {
            guard case .notAFerryServer = error else { throw error }
        }
        await listener.stop()
    }

    @Test func anUnreachableServerIsReportedAsSuch() async throws {
        let port = try await TextListener.unusedPort()
        do {
            _ = try await FerryClient(host: "127.0.0.1", port: port).withConnection { try await $0.list() }
            Issue.record("connected to nothing")
        } catch let error as FerryClientError {
            guard case .unreachable = error else { throw error }
            #expect(error.description.hasPrefix("server unreachable"))
        }
    }
}
