import FerryClient
import FerryProtocol
import FerryServer
import Foundation
import Testing

@Suite("Many clients at once")
struct ConcurrencyTests {
    @Test func aHundredClientsListGetAndPutAtOnce() async throws {
        // All from 127.0.0.1: above the default per-address limit.
        try await TestServer.run(configuration: ServerConfiguration(maximumConnectionsPerAddress: 128)) { server in
            let shared = Scratch.randomBytes(300_000, seed: 100)
            try server.write("shared.bin", shared)
            let scratch = Scratch.makeDirectory("clients")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<100 {
                    group.addTask {
                        let mine = Scratch.randomBytes(50_000 + client * 1_000, seed: UInt64(client))
                        let source = scratch.appendingPathComponent("up-\(client)")
                        let copy = scratch.appendingPathComponent("down-\(client)")
                        try Data(mine).write(to: source)
                        try await server.client.withConnection { connection in
                            switch client % 3 {
                            case 0:
                                let names = try await connection.list().map(\.name)
                                #expect(names.contains("shared.bin"))
                            case 1:
                                try await connection.get("shared.bin", to: copy.path)
                                #expect([UInt8](try Data(contentsOf: copy)) == shared)
                            default:
                                break
                            }
                            try await connection.put(source.path, as: "client-\(client)")
                            try await connection.get("client-\(client)", to: copy.path, overwrite: true)
                            #expect([UInt8](try Data(contentsOf: copy)) == mine)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let names = try await server.client.withConnection { try await $0.list() }.map(\.name)
            #expect(names.count == 101)
            for client in 0..<100 {
                #expect(try server.contents(of: "client-\(client)").count == 50_000 + client * 1_000)
            }
            #expect(!(try server.folderContents().contains { $0.hasPrefix(".") }), "no staging left")
        }
    }

    @Test func twoUploadsRacingForOneNewNameHaveExactlyOneWinner() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("race")
            let contents = (0..<2).map { Scratch.randomBytes(2 << 20, seed: 200 + UInt64($0)) }
            for (index, bytes) in contents.enumerated() {
                try Data(bytes).write(to: scratch.appendingPathComponent("source-\(index)"))
            }
            for round in 0..<10 {
                let name = "raced-\(round)"
                let outcomes = try await withThrowingTaskGroup(of: ErrorCode?.self) { group in
                    for index in 0..<2 {
                        group.addTask {
                            do {
                                try await server.client.withConnection {
                                    _ = try await $0.put(
                                        scratch.appendingPathComponent("source-\(index)").path,
                                        as: name
                                    )
                                }
                                return nil
                            } catch let error as FerryClientError {
                                return error.errorCode
                            }
                        }
                    }
                    return try await group.reduce(into: [ErrorCode?]()) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 == nil }.count == 1, "exactly one upload wins: \(outcomes)")
                #expect(outcomes.contains(.fileExists), "the other is told the file exists")
                let stored = try server.contents(of: name)
                #expect(stored == contents[0] || stored == contents[1], "the stored file is one upload, never a mix")
            }
        }
    }
}
