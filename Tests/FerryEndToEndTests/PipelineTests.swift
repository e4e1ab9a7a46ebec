import FerryClient
import FerryProtocol
import Foundation
import NIOCore
import Testing

@Suite("Many files over one connection")
struct PipelineTests {
    /// STOR, DATA and END in one write, several uploads back to back (SPEC.md §7.3, pipelined upload).
    private func pipelinedUpload(_ name: String, _ bytes: [UInt8], overwrite: Bool = false) -> [UInt8] {
        let chunk = DataChunk(ByteBuffer(bytes: bytes))
        var transfer = OutgoingTransfer()
        transfer.record(chunk)
        var frames = RawConnection.encode(
            .store(StoreRequest(name: name, size: UInt64(bytes.count), options: overwrite ? .overwrite : []))
        )
        if !bytes.isEmpty {
            frames += RawConnection.encode(.data(chunk))
        }
        return frames + RawConnection.encode(.end(transfer.end))
    }

    @Test func pipelinedUploadsAreAnsweredInOrderAndARefusedOneDropsItsData() async throws {
        try await TestServer.run { server in
            try server.write("kept", Array("old".utf8))
            try server.write("empty-kept", [])
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(
                raw: self.pipelinedUpload("kept", Array("new".utf8))
                    + self.pipelinedUpload("fresh", Array("fresh".utf8))
                    + self.pipelinedUpload("empty-kept", [])
                    + self.pipelinedUpload("../escape", [1, 2, 3])
                    + self.pipelinedUpload("kept", Array("newer".utf8), overwrite: true)
                    + self.pipelinedUpload("twice", Array("first".utf8))
                    + self.pipelinedUpload("twice", Array("second".utf8))
                    + RawConnection.encode(.retrieve(RetrieveRequest(name: "twice")))
                    + RawConnection.encode(.list)
            )
            #expect(try await connection.expectStoreRefusal() == .fileExists)
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY for fresh") }
            guard case .ok? = try await connection.next() else { throw TestFailure("no OK for fresh") }
            #expect(try await connection.expectStoreRefusal() == .fileExists)
            #expect(try await connection.expectError() == .invalidName)
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY for kept") }
            guard case .ok? = try await connection.next() else { throw TestFailure("no OK for kept") }
            guard case .ready? = try await connection.next() else { throw TestFailure("no READY for twice") }
            guard case .ok? = try await connection.next() else { throw TestFailure("no OK for twice") }
            // The same new name again, uploaded in the same burst: one of them wins (SPEC §7.3), never a mix.
            #expect(try await connection.expectStoreRefusal() == .fileExists)
            // A RETR right behind the uploads sees them committed.
            guard case .fileInfo? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
            guard case .data(let chunk)? = try await connection.next() else { throw TestFailure("no DATA") }
            #expect(Array(chunk.bytes.readableBytesView) == Array("first".utf8))
            guard case .end? = try await connection.next() else { throw TestFailure("no END") }
            guard case .listEntries(let entries)? = try await connection.next() else { throw TestFailure("no list") }
            #expect(entries.map(\.name) == ["empty-kept", "fresh", "kept", "twice"])
            guard case .listEnd? = try await connection.next() else { throw TestFailure("no LIST_END") }
            #expect(try server.contents(of: "kept") == Array("newer".utf8))
            #expect(try server.contents(of: "fresh") == Array("fresh".utf8))
            #expect(try server.contents(of: "empty-kept") == [])
            #expect(try server.folderContents() == ["empty-kept", "fresh", "kept", "twice"], "no staging left behind")
            await connection.close()
        }
    }

    /// The server reads the small files of a run of pipelined RETRs together, ahead of their turn. Each answer must
    /// still be the file as every earlier request left it, and a failure in the run must stay that file's alone.
    @Test func pipelinedDownloadsAreAnsweredInOrderWithWhatEachEarlierRequestLeft() async throws {
        try await TestServer.run { server in
            // 150 files of 40 KiB: more than one read-ahead group by count (64) and by bytes (1 MiB).
            var contents: [String: [UInt8]] = [:]
            for index in 0..<150 {
                let bytes = Scratch.randomBytes(40 << 10, seed: UInt64(index))
                contents["small-\(index)"] = bytes
                try server.write("small-\(index)", bytes)
            }
            contents["large"] = Scratch.randomBytes(300 << 10, seed: 999)
            try server.write("large", try #require(contents["large"]))
            var requests = (0..<150).map { "small-\($0)" }
            requests.insert("missing", at: 10)
            requests.insert("large", at: 70)
            requests.insert("../escape", at: 100)
            let replacement = Array("replaced".utf8)
            var burst = requests.flatMap { RawConnection.encode(.retrieve(RetrieveRequest(name: $0))) }
            // An upload in the middle of the burst, then downloads of the file it replaced and of one it created.
            burst += self.pipelinedUpload("small-3", replacement, overwrite: true)
            burst += self.pipelinedUpload("created", replacement)
            burst += ["small-3", "created", "small-4"].flatMap {
                RawConnection.encode(.retrieve(RetrieveRequest(name: $0)))
            }
            let connection = try await RawConnection.handshaken(port: server.port)
            try await connection.send(raw: burst)
            for name in requests {
                switch name {
                case "missing": #expect(try await connection.expectError() == .noSuchFile)
                case "../escape": #expect(try await connection.expectError() == .invalidName)
                default: #expect(try await self.receive(over: connection) == contents[name], "\(name)")
                }
            }
            for _ in 0..<2 {
                guard case .ready? = try await connection.next() else { throw TestFailure("no READY") }
                guard case .ok? = try await connection.next() else { throw TestFailure("no OK") }
            }
            #expect(try await self.receive(over: connection) == replacement, "small-3 as the upload left it")
            #expect(try await self.receive(over: connection) == replacement, "created by the upload before it")
            #expect(try await self.receive(over: connection) == contents["small-4"])
            await connection.close()
        }
    }

    /// One RETR's answer: FILE_INFO, DATA, END, with the whole-file length and CRC checked.
    private func receive(over connection: RawConnection) async throws -> [UInt8] {
        guard case .fileInfo(let info)? = try await connection.next() else { throw TestFailure("no FILE_INFO") }
        var bytes: [UInt8] = []
        while true {
            switch try await connection.next() {
            case .data(let chunk)?:
                bytes += Array(chunk.bytes.readableBytesView)
            case .end(let end)?:
                #expect(end == EndOfData(length: UInt64(bytes.count), crc32: CRC32.checksum(bytes)))
                #expect(info.size == UInt64(bytes.count))
                return bytes
            case let other:
                throw TestFailure("unexpected \(String(describing: other))")
            }
        }
    }

    /// Small uploads go out in shared writes, and a full window waits for answers without writing: every file
    /// must still be answered in order, whatever the window, with refusals among them.
    @Test(arguments: [1, 3, 16])
    func smallUploadsPastAFullWindowAreAllAnsweredInOrder(window: Int) async throws {
        try await TestServer.run { server in
            let sources = Scratch.makeDirectory("window")
            var uploads: [FerryConnection.Upload] = []
            for index in 0..<120 {
                let name = "w-\(index)"
                try Data(Scratch.randomBytes(index * 61, seed: UInt64(index))).write(
                    to: sources.appendingPathComponent(name)
                )
                uploads.append(.init(source: sources.appendingPathComponent(name).path, name: name))
            }
            try server.write("w-50", [7])  // refused by the server, without overwrite
            uploads.insert(.init(source: sources.appendingPathComponent("w-0").path, name: "bad/name"), at: 90)
            var results: [(index: Int, result: Result<UInt64, FerryClientError>)] = []
            try await server.client.withConnection { connection in
                try await connection.put(uploads, window: window) { results.append(($0, $1)) }
            }
            #expect(results.map(\.index) == Array(uploads.indices))
            for (index, result) in results {
                let name = uploads[index].name
                switch (name, result) {
                case ("bad/name", .failure(.invalidName)):
                    break
                case ("w-50", .failure(let error)):
                    #expect(error.errorCode == .fileExists)
                case (_, .success(let size)):
                    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: uploads[index].source)))
                    #expect(size == UInt64(bytes.count))
                    #expect(try server.contents(of: name) == bytes, "\(name) stored intact")
                default:
                    Issue.record("\(name): \(result)")
                }
            }
            #expect(try server.contents(of: "w-50") == [7])
        }
    }

    @Test func batchesReportEveryFileInOrderAndGoOnPastFailures() async throws {
        try await TestServer.run { server in
            let scratch = Scratch.makeDirectory("batch")
            let sources = scratch.appendingPathComponent("sources")
            let copies = scratch.appendingPathComponent("copies")
            try FileManager.default.createDirectory(at: sources, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: copies, withIntermediateDirectories: true)
            // 150 small files, two larger than one DATA frame, and an empty one.
            var contents: [String: [UInt8]] = [:]
            for index in 0..<150 {
                contents["small-\(index)"] = Scratch.randomBytes(index * 37, seed: UInt64(index))
            }
            contents["large-a"] = Scratch.randomBytes(700_000, seed: 1000)
            contents["large-b"] = Scratch.randomBytes(262_145, seed: 1001)
            for (name, bytes) in contents {
                try Data(bytes).write(to: sources.appendingPathComponent(name))
            }
            try server.write("small-7", [9, 9, 9])  // in the way: refused without overwrite
            var names = contents.keys.sorted()
            names.insert("missing-source", at: 20)
            names.insert(".bad-name", at: 40)
            let uploads = names.map {
                FerryConnection.Upload(source: sources.appendingPathComponent($0).path, name: $0)
            }

            var stored: [Int: Result<UInt64, FerryClientError>] = [:]
            var order: [Int] = []
            try await server.client.withConnection { connection in
                try await connection.put(uploads) { index, result in
                    order.append(index)
                    stored[index] = result
                }
            }
            #expect(order == Array(uploads.indices), "every file reported once, in order")
            for (index, name) in names.enumerated() {
                switch (name, stored[index]) {
                case ("missing-source", .failure(.localFile)?), (".bad-name", .failure(.invalidName)?):
                    break
                case ("small-7", .failure(let error)?):
                    #expect(error.errorCode == .fileExists)
                case (_, .success(let size)?):
                    #expect(size == UInt64(contents[name]?.count ?? -1))
                    #expect(try server.contents(of: name) == contents[name], "\(name) stored intact")
                default:
                    Issue.record("\(name): \(String(describing: stored[index]))")
                }
            }
            #expect(try server.contents(of: "small-7") == [9, 9, 9])

            // Downloads: a missing file and a target whose folder does not exist (small and large) among them.
            var downloads = contents.keys.sorted().map {
                FerryConnection.Download(name: $0, destination: copies.appendingPathComponent($0).path)
            }
            downloads.insert(.init(name: "nowhere", destination: copies.path + "/nowhere"), at: 10)
            downloads.insert(.init(name: "small-3", destination: copies.path + "/no/such/folder"), at: 30)
            downloads.insert(.init(name: "large-a", destination: copies.path + "/no/such/folder"), at: 31)
            var received: [Int: Result<UInt64, FerryClientError>] = [:]
            try await server.client.withConnection { connection in
                try await connection.get(downloads, window: 8) { index, result in received[index] = result }
                #expect(try await connection.list().count == 152, "the connection is still usable")
            }
            #expect(received.count == downloads.count)
            for (index, download) in downloads.enumerated() {
                switch (download.name, download.destination.hasSuffix("/no/such/folder"), received[index]) {
                case ("nowhere", _, .failure(let error)?):
                    #expect(error.errorCode == .noSuchFile)
                case (_, true, .failure(.localFile)?):
                    break
                case ("small-7", false, .success?):
                    #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: download.destination))) == [9, 9, 9])
                case (let name, false, .success(let size)?):
                    #expect(size == UInt64(contents[name]?.count ?? -1))
                    let copy = [UInt8](try Data(contentsOf: URL(fileURLWithPath: download.destination)))
                    #expect(copy == contents[name], "\(name) downloaded intact")
                default:
                    Issue.record("\(download.name): \(String(describing: received[index]))")
                }
            }
            let left = try FileManager.default.contentsOfDirectory(atPath: copies.path)
            #expect(left.count == 152 && !left.contains { $0.hasPrefix(".") }, "no temporary file left")
        }
    }
}
