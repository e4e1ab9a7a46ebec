import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `ferryd --metrics ADDRESS:PORT`: Prometheus' text format at /metrics, scraped while a transfer runs.
@Suite("Metrics", .enabled(if: User.canRunUnprivileged))
struct MetricsTests {
    /// One GET over a plain socket, as a scraper does: the whole answer, headers and body.
    private static func get(_ path: String, port: Int) throws -> String {
        let socket = try LoopbackSocket.connect(port: port)
        defer { close(socket) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(socket, $0.baseAddress, $0.count) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(socket, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            answer += buffer[..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// The value of one sample line, `NAME{LABELS} VALUE`; `nil` if there is none.
    private static func value(_ sample: String, in scrape: String) -> Double? {
        scrape.split(separator: "\n").first { $0.hasPrefix(sample + " ") }
            .flatMap { Double($0.dropFirst(sample.count + 1)) }
    }

    @Test func theCountersMoveWhileATransferRuns() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        let size = 4 << 20
        try Data(Scratch.randomBytes(size)).write(to: work.appendingPathComponent("big.bin"))
        try User.handOver(library)
        try User.handOver(work)
        let output = Pipe()
        let process = try Binaries.launch(
            "ferryd",
            ["--root", library.path, "--port", "0", "--metrics", "127.0.0.1:0"],
            as: .ordinaryUser,
            stdout: output
        )
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        var text = ""
        while !(text.contains("listening on ") && text.contains("/metrics\n")) {
            let more = output.fileHandleForReading.availableData
            guard !more.isEmpty else { throw TestFailure("ferryd exited: \(text)") }
            text += String(decoding: more, as: UTF8.self)
        }
        func port(after marker: String) throws -> Int {
            let range = try #require(text.range(of: marker))
            return try #require(Int(text[range.upperBound...].prefix { $0.isNumber }))
        }
        let serverPort = try port(after: "listening on 127.0.0.1:")
        let metricsPort = try port(after: "metrics on http://127.0.0.1:")

        let before = try Self.get("/metrics", port: metricsPort)
        #expect(before.hasPrefix("HTTP/1.1 200 OK"), "\(before)")
        #expect(before.contains("text/plain; version=0.0.4"))
        #expect(Self.value("ferry_connections_open", in: before) == 0, "\(before)")

        let put = try await Binaries.run(
            "ferry",
            ["put", "big.bin", "--port", "\(serverPort)"],
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(put.status == 0, "\(put.stderr)")
        let again = try await Binaries.run(
            "ferry",
            ["put", "big.bin", "--port", "\(serverPort)"],
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(again.status == 1, "the name is taken: 101")

        // A slow download, scraped while it is paused after 256 KiB (the reader says so from its own thread: a
        // fixed sleep here once scraped before a loaded test run had even started the reader), and after.
        let paused = Flag()
        async let download = SlowReader.download(
            "big.bin",
            port: serverPort,
            chunk: 64 << 10,
            every: .milliseconds(5),
            stoppingAfter: 256 << 10,
            pause: .seconds(2),
            whilePaused: { paused.set() }
        )
        try await paused.wait()
        let during = try Self.get("/metrics", port: metricsPort)
        #expect(Self.value("ferry_connections_open", in: during) == 1, "\(during)")
        #expect(Self.value(#"ferry_requests_total{operation="STOR",result="ok"}"#, in: during) == 1, "\(during)")
        #expect(Self.value(#"ferry_requests_total{operation="STOR",result="101"}"#, in: during) == 1, "\(during)")
        #expect(Self.value("ferry_received_bytes_total", in: during) == Double(size), "\(during)")
        #expect(Self.value("ferry_uploads_committed_total", in: during) == 1, "\(during)")
        #expect(Self.value(#"ferry_transfer_duration_seconds_count{operation="STOR"}"#, in: during) == 2, "\(during)")
        _ = try await download
        var after = ""
        for _ in 0..<100 {
            after = try Self.get("/metrics", port: metricsPort)
            if Self.value("ferry_connections_open", in: after) == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.value(#"ferry_requests_total{operation="RETR",result="ok"}"#, in: after) == 1, "\(after)")
        #expect(Self.value("ferry_sent_bytes_total", in: after) == Double(size), "\(after)")
        #expect(Self.value(#"ferry_transfer_duration_seconds_count{operation="RETR"}"#, in: after) == 1, "\(after)")
        #expect(Self.value("ferry_connections_open", in: after) == 0, "\(after)")

        let elsewhere = try Self.get("/", port: metricsPort)
        #expect(elsewhere.hasPrefix("HTTP/1.1 404 Not Found"), "\(elsewhere)")
    }
}
