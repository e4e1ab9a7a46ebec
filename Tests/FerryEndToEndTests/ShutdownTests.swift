import FerryClient
import FerryProtocol
import Foundation
import NIOCore
import Testing

@Suite("Graceful shutdown")
struct ShutdownTests {
    @Test func anUploadInProgressFinishesAndIdleClientsAreToldTheServerIsStopping() async throws {
        let root = Scratch.makeDirectory("library")
        let bytes = Scratch.randomBytes(3 << 20, seed: 7)
        try await TestServer.run(root: root) { server in
            let idle = try await RawConnection.handshaken(port: server.port)
            let uploading = try await RawConnection.handshaken(port: server.port)
            try await uploading.send(.store(StoreRequest(name: "during-shutdown", size: UInt64(bytes.count))))
            guard case .ready? = try await uploading.next() else { throw TestFailure("no READY") }
            try await uploading.send(.data(DataChunk(ByteBuffer(bytes: bytes[..<(1 << 19)]))))
            try await uploading.send(.data(DataChunk(ByteBuffer(bytes: bytes[(1 << 19)..<(1 << 20)]))))

            await server.group.triggerGracefulShutdown()
            #expect(try await idle.expectError() == .shuttingDown, "an idle client is told at once")
            // New clients are no longer accepted.
            try await Task.sleep(for: .milliseconds(100))
            await #expect(throws: FerryClientError.self) {
                try await server.client.withConnection { try await $0.list() }
            }

            for start in stride(from: 1 << 20, to: bytes.count, by: 1 << 19) {
                try await uploading.send(.data(DataChunk(ByteBuffer(bytes: bytes[start..<(start + (1 << 19))]))))
            }
            try await uploading.send(.end(EndOfData(length: UInt64(bytes.count), crc32: CRC32.checksum(bytes))))
            let answer = try await uploading.next()
            #expect(answer == .ok, "the running upload completes: \(String(describing: answer))")
            #expect(try await uploading.expectError() == .shuttingDown, "then the connection is closed")
        }
        #expect(try Data(contentsOf: root.appendingPathComponent("during-shutdown")) == Data(bytes))
        #expect(try Scratch.libraryContents(root) == ["during-shutdown"])
    }
}
