import FerryClient
import FerryProtocol
import FerryServer
import Foundation
import NIOCore
import Testing

/// DELETE and RENAME (protocol version 2) and the permission levels that govern every request.
@Suite("Delete, rename and permissions")
struct DeleteAndRenameTests {
    @Test func deleteRemovesAFileAndNothingElse() async throws {
        try await TestServer.run { server in
            try server.write("doomed.txt", Array("bye".utf8))
            try FileManager.default.createSymbolicLink(
                atPath: server.path("link"),
                withDestinationPath: server.path("doomed.txt")
            )
            try FileManager.default.createDirectory(atPath: server.path("folder"), withIntermediateDirectories: false)
            try await server.client.withConnection { connection in
                #expect(connection.version == Handshake.supportedVersions.upperBound)
                try await connection.delete("doomed.txt")
                for name in ["doomed.txt", "link", "folder", "never-was"] {
                    await #expect(throws: FerryClientError.self, "\(name)") { try await connection.delete(name) }
                }
                // Still usable after the refusals.
                #expect(try await connection.list().isEmpty)
            }
            #expect(!FileManager.default.fileExists(atPath: server.path("doomed.txt")))
            #expect(FileManager.default.fileExists(atPath: server.path("folder")))
            #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: server.path("link"))) != nil)
        }
    }

    @Test func renameNeverReplacesUnlessAsked() async throws {
        try await TestServer.run { server in
            try server.write("a", Array("A".utf8))
            try server.write("b", Array("B".utf8))
            try FileManager.default.createDirectory(atPath: server.path("folder"), withIntermediateDirectories: false)
            try await server.client.withConnection { connection in
                try await connection.rename("a", to: "c")
                #expect(try server.contents(of: "c") == Array("A".utf8))
                do {
                    try await connection.rename("c", to: "b")
                    Issue.record("renamed over an existing file without overwrite")
                } catch let error as FerryClientError {
                    #expect(error.errorCode == .fileExists)
                }
                #expect(try server.contents(of: "b") == Array("B".utf8), "b untouched")
                #expect(try server.contents(of: "c") == Array("A".utf8), "c untouched")
                try await connection.rename("c", to: "b", overwrite: true)
                #expect(try server.contents(of: "b") == Array("A".utf8))
                do {
                    try await connection.rename("b", to: "folder", overwrite: true)
                    Issue.record("a folder was replaced")
                } catch let error as FerryClientError {
                    #expect(error.errorCode == .fileExists)
                }
                do {
                    try await connection.rename("missing", to: "x")
                    Issue.record("renamed a missing file")
                } catch let error as FerryClientError {
                    #expect(error.errorCode == .noSuchFile)
                }
                try await connection.rename("b", to: "b")
                #expect(try await connection.list().map(\.name) == ["b"])
                // Two spellings of é (composed, decomposed) are two names: never a rename onto itself.
                try server.write("caf\u{E9}", Array("composed".utf8))
                try server.write("cafe\u{301}", Array("decomposed".utf8))
                do {
                    try await connection.rename("caf\u{E9}", to: "cafe\u{301}")
                    Issue.record("a differently spelled name was replaced")
                } catch let error as FerryClientError {
                    #expect(error.errorCode == .fileExists)
                }
                #expect(try server.contents(of: "cafe\u{301}") == Array("decomposed".utf8))
            }
        }
    }

    /// A rename and an upload racing for one new name: exactly one wins, and the name holds the winner's bytes.
    @Test func aRenameAndAnUploadRacingForOneNameHaveOneWinner() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("client")
            try Data("uploaded".utf8).write(to: scratch.appendingPathComponent("upload"))
            for round in 0..<20 {
                let name = "target-\(round)"
                try server.write("source-\(round)", Array("renamed".utf8))
                async let renamed = Self.succeeds {
                    try await server.client.withConnection { try await $0.rename("source-\(round)", to: name) }
                }
                async let uploaded = Self.succeeds {
                    _ = try await server.client.withConnection {
                        try await $0.put(scratch.appendingPathComponent("upload").path, as: name)
                    }
                }
                let (one, other) = await (renamed, uploaded)
                #expect(one != other, "exactly one of rename and upload wins \(name)")
                let held = String(decoding: try server.contents(of: name), as: UTF8.self)
                #expect(held == (one ? "renamed" : "uploaded"))
            }
        }
    }

    /// Each level allows exactly its operations; a refusal is 110 and leaves the connection usable.
    @Test func eachPermissionLevelAllowsExactlyItsOperations() async throws {
        let scratch = Scratch.makeDirectory("client")
        try Data("new".utf8).write(to: scratch.appendingPathComponent("new"))
        let expected: [(Permission, [String: Bool])] = [
            (.read, ["list": true, "get": true, "put": false, "overwrite": false, "delete": false, "rename": false]),
            (.upload, ["list": true, "get": true, "put": true, "overwrite": false, "delete": false, "rename": false]),
            (.full, ["list": true, "get": true, "put": true, "overwrite": true, "delete": true, "rename": true]),
        ]
        for (level, allowed) in expected {
            try await TestServer.run(configuration: ServerConfiguration(anonymousPermission: level)) { server in
                try server.write("existing", Array("old".utf8))
                try server.write("other", Array("other".utf8))
                try await server.client.withConnection { connection in
                    let outcomes: [(String, () async throws -> Void)] = [
                        ("list", { _ = try await connection.list() }),
                        (
                            "get",
                            {
                                try await connection.get(
                                    "existing",
                                    to: scratch.appendingPathComponent("got-\(level)").path,
                                    overwrite: true
                                )
                            }
                        ),
                        (
                            "put",
                            { _ = try await connection.put(scratch.appendingPathComponent("new").path, as: "new") }
                        ),
                        (
                            "overwrite",
                            {
                                _ = try await connection.put(
                                    scratch.appendingPathComponent("new").path,
                                    as: "existing",
                                    overwrite: true
                                )
                            }
                        ),
                        ("delete", { try await connection.delete("other") }),
                        ("rename", { try await connection.rename("existing", to: "renamed") }),
                    ]
                    for (operation, run) in outcomes {
                        do {
                            try await run()
                            #expect(allowed[operation] == true, "\(level) allowed \(operation)")
                        } catch let error as FerryClientError {
                            #expect(allowed[operation] == false, "\(level) refused \(operation): \(error)")
                            #expect(error.errorCode == .permissionDenied, "\(level) \(operation): \(error)")
                        }
                    }
                }
                if level == .read {
                    #expect(try server.folderContents() == ["existing", "other"], "nothing changed")
                }
            }
        }
    }

    /// A version 1 client negotiates version 1, in which DELETE and RENAME do not exist: 207 and a close.
    @Test func aVersionOneSessionHasNoDelete() async throws {
        try await TestServer.run { server in
            try server.write("kept", Array("k".utf8))
            let connection = try await RawConnection(port: server.port)
            var hello = FerryConnectionDefaults.hello
            hello.maximumVersion = 1
            try await connection.send(raw: Handshake.magic)
            try await connection.send(.hello(hello))
            _ = try await connection.readRaw(count: 8)
            guard case .hello(let serverHello) = try await connection.next() else { throw TestFailure("no HELLO") }
            #expect(serverHello.maximumVersion == Handshake.supportedVersions.upperBound)
            try await connection.send(.delete(DeleteRequest(name: "kept")))
            #expect(try await connection.expectError() == .unexpectedFrame)
            await connection.close()
            // Even with a name that breaks the rules: version 1 has no DELETE at all.
            let another = try await RawConnection(port: server.port)
            try await another.send(raw: Handshake.magic)
            try await another.send(.hello(hello))
            _ = try await another.readRaw(count: 8)
            _ = try await another.next()
            try await another.send(.delete(DeleteRequest(name: "../escape")))
            #expect(try await another.expectError() == .unexpectedFrame)
            await another.close()
            #expect(try server.folderContents() == ["kept"])
        }
    }

    private static func succeeds(_ body: () async throws -> Void) async -> Bool {
        (try? await body()) != nil
    }
}
