import FerryClient
import FerryProtocol
import FerryServer
import Foundation
import NIOCore
import Testing

/// The server never leaves the folder it serves: links planted where its hidden folders are, or where the library
/// folder itself was, lead nowhere; and several servers share one library without breaking each other.
@Suite("The library's boundary")
struct LibraryBoundaryTests {
    /// A folder outside the library with a file that must survive whatever the server is asked.
    private static func victim() throws -> URL {
        let victim = Scratch.makeDirectory("victim")
        try Data("precious".utf8).write(to: victim.appendingPathComponent("important.db"))
        return victim
    }

    private static func expectUntouched(_ victim: URL) throws {
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim.path) == ["important.db"])
        #expect(try Data(contentsOf: victim.appendingPathComponent("important.db")) == Data("precious".utf8))
    }

    @Test func aLinkInPlaceOfAHiddenFolderRefusesStartUp() async throws {
        for hidden in [".ferry-checksums", ".ferry-staging"] {
            let victim = try Self.victim()
            let root = Scratch.makeDirectory("library")
            try FileManager.default.createSymbolicLink(
                atPath: root.appendingPathComponent(hidden).path,
                withDestinationPath: victim.path
            )
            do {
                _ = try await FileLibrary.open(at: root.path)
                Issue.record("a library with \(hidden) as a link was opened")
            } catch {
                #expect("\(error)".contains("in the way"), "\(error)")
            }
            // Before, start-up removed every entry of the linked folder that had no namesake in the library.
            try Self.expectUntouched(victim)
        }
    }

    @Test func aLinkPlantedInPlaceOfTheChecksumFolderWhileRunningLeadsNowhere() async throws {
        let victim = try Self.victim()
        try await TestServer.run { server in
            let large = Scratch.randomBytes(2 << 20)
            try server.write("important.db", large)
            // Swap the folder for a link to the victim's folder.
            let tables = server.root.appendingPathComponent(".ferry-checksums")
            try FileManager.default.moveItem(at: tables, to: server.root.appendingPathComponent("moved-away"))
            try FileManager.default.createSymbolicLink(atPath: tables.path, withDestinationPath: victim.path)
            let scratch = Scratch.makeDirectory("client")
            // A download of a cached file writes its table; so does a large upload under a name the client chose.
            try await server.client.withConnection { connection in
                try await connection.get("important.db", to: scratch.appendingPathComponent("copy").path)
                try Data(Scratch.randomBytes(300_000)).write(to: scratch.appendingPathComponent("upload"))
                _ = try await connection.put(scratch.appendingPathComponent("upload").path, as: "other.db")
            }
            #expect(sameBytes([UInt8](try Data(contentsOf: scratch.appendingPathComponent("copy"))), large))
        }
        try Self.expectUntouched(victim)
    }

    /// The library folder is moved away and a link (or a new folder) takes its name: the server goes on serving the
    /// folder it opened, and LIST and RETR agree on it.
    @Test func theServerKeepsServingTheFolderItOpened() async throws {
        let outside = Scratch.makeDirectory("outside")
        try Data("secret".utf8).write(to: outside.appendingPathComponent("secret.txt"))
        for replacement in ["link", "folder"] {
            let parent = Scratch.makeDirectory("parent")
            let root = parent.appendingPathComponent("library")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            try await TestServer.run(root: root) { server in
                try server.write("served.txt", Array("served".utf8))
                _ = try await server.client.withConnection { try await $0.list() }  // cached
                try FileManager.default.moveItem(at: root, to: parent.appendingPathComponent("library.old"))
                if replacement == "link" {
                    try FileManager.default.createSymbolicLink(atPath: root.path, withDestinationPath: outside.path)
                } else {
                    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
                    try Data("new".utf8).write(to: root.appendingPathComponent("new.txt"))
                }
                let scratch = Scratch.makeDirectory("client")
                try await server.client.withConnection { connection in
                    #expect(try await connection.list().map(\.name) == ["served.txt"], "\(replacement)")
                    try Data("added".utf8).write(to: parent.appendingPathComponent("library.old/added.txt"))
                    #expect(try await connection.list().map(\.name) == ["added.txt", "served.txt"], "\(replacement)")
                    try await connection.get("served.txt", to: scratch.appendingPathComponent("served").path)
                    await #expect(throws: FerryClientError.self) {
                        try await connection.get("secret.txt", to: scratch.appendingPathComponent("secret").path)
                    }
                    await #expect(throws: FerryClientError.self) {
                        try await connection.get("new.txt", to: scratch.appendingPathComponent("new").path)
                    }
                }
                #expect(!FileManager.default.fileExists(atPath: scratch.appendingPathComponent("secret").path))
            }
        }
    }

    /// Two servers on one library: what one stores the other lists and serves; one's start-up or stop never breaks
    /// the other's upload in progress; a race for one name across both has exactly one winner.
    @Test func twoServersShareOneLibrary() async throws {
        let root = Scratch.makeDirectory("shared")
        let scratch = Scratch.makeDirectory("client")
        let large = Scratch.randomBytes(20 << 20)
        try Data(large).write(to: scratch.appendingPathComponent("large"))
        try await TestServer.run(root: root) { first in
            try await TestServer.run(root: root) { second in
                // Stored through one, listed and served by the other (its listing was cached before).
                #expect(try await second.client.withConnection { try await $0.list() }.isEmpty)
                _ = try await first.client.withConnection {
                    try await $0.put(scratch.appendingPathComponent("large").path, as: "large")
                }
                #expect(try await second.client.withConnection { try await $0.list() }.map(\.name) == ["large"])
                _ = try await second.client.withConnection {
                    try await $0.get("large", to: scratch.appendingPathComponent("large-copy").path)
                }
                #expect(sameBytes([UInt8](try Data(contentsOf: scratch.appendingPathComponent("large-copy"))), large))

                // An upload half sent through the first while a third server starts and stops on the library.
                let upload = try await RawConnection.handshaken(port: first.port)
                let half = ByteBuffer(bytes: large[..<(10 << 20)])
                let rest = ByteBuffer(bytes: large[(10 << 20)...])
                try await upload.send(.store(StoreRequest(name: "during-restart", size: UInt64(large.count))))
                guard case .ready? = try await upload.next() else { throw TestFailure("no READY") }
                for chunk in half.chunked(256 << 10) { try await upload.send(.data(DataChunk(chunk))) }
                try await TestServer.run(root: root) { third in
                    _ = try await third.client.withConnection { try await $0.list() }
                }
                var transfer = OutgoingTransfer()
                for chunk in half.chunked(256 << 10) + rest.chunked(256 << 10) {
                    transfer.record(DataChunk(chunk))
                }
                for chunk in rest.chunked(256 << 10) { try await upload.send(.data(DataChunk(chunk))) }
                try await upload.send(.end(transfer.end))
                let answer = try await upload.next()
                guard case .ok? = answer else {
                    throw TestFailure("the upload was answered \(String(describing: answer))")
                }
                await upload.close()
                #expect(sameBytes(try first.contents(of: "during-restart"), large))

                // Races for one name, one client through each server.
                try Data("from the first".utf8).write(to: scratch.appendingPathComponent("a"))
                try Data("from the second".utf8).write(to: scratch.appendingPathComponent("b"))
                for round in 0..<20 {
                    let name = "race-\(round)"
                    async let viaFirst = Self.succeeds {
                        try await first.client.withConnection {
                            try await $0.put(scratch.appendingPathComponent("a").path, as: name)
                        }
                    }
                    async let viaSecond = Self.succeeds {
                        try await second.client.withConnection {
                            try await $0.put(scratch.appendingPathComponent("b").path, as: name)
                        }
                    }
                    let (one, other) = await (viaFirst, viaSecond)
                    #expect(one != other, "exactly one of the two uploads of \(name) wins")
                }
                #expect(Scratch.stagedFiles(root).isEmpty)
            }
        }
    }

    private static func succeeds(_ body: () async throws -> UInt64) async -> Bool {
        (try? await body()) != nil
    }
}

extension ByteBuffer {
    /// Consecutive slices of at most `size` bytes.
    fileprivate func chunked(_ size: Int) -> [ByteBuffer] {
        stride(from: 0, to: self.readableBytes, by: size).compactMap {
            self.getSlice(at: self.readerIndex + $0, length: Swift.min(size, self.readableBytes - $0))
        }
    }
}
