import FerryProtocol
import Foundation
import NIOCore
import Testing

/// The two executables as people and scripts use them.
@Suite("ferryd and ferry on the command line")
struct CommandLineTests {
    /// A running `ferryd` process on a free port, stopped with SIGTERM at the end.
    struct Daemon {
        let process: Process
        let port: Int
        let root: URL
        let output: Pipe

        static func start(
            host: String = "127.0.0.1",
            root: URL = Scratch.makeDirectory("library"),
            extraArguments: [String] = [],
            as user: User = .current,
            limits: [String] = [],
            stderr: Pipe? = nil
        ) async throws -> Daemon {
            let output = Pipe()
            let process = try Binaries.launch(
                "ferryd",
                ["--root", root.path, "--host", host, "--port", "0"] + extraArguments,
                as: user,
                limits: limits,
                stdout: output,
                stderr: stderr
            )
            // A line says where it listens (after the certificate's fingerprint, with TLS).
            var received = Data()
            while !(String(decoding: received, as: UTF8.self).contains("listening on ") && received.last == 10) {
                let more = output.fileHandleForReading.availableData
                guard !more.isEmpty else { throw TestFailure("ferryd exited before listening") }
                received += more
            }
            let text = String(decoding: received, as: UTF8.self)
            guard let range = text.range(of: "listening on "),
                let address = text[range.upperBound...].split(whereSeparator: { $0 == "," || $0 == " " }).first,
                let port = address.split(separator: ":").last.flatMap({ Int($0) })
            else {
                throw TestFailure("unexpected first lines: \(text)")
            }
            #expect(text.contains(root.resolvingSymlinksInPath().path), "the line names the library: \(text)")
            let fingerprint = text.range(of: "fingerprint ").map {
                String(text[$0.upperBound...].prefix { !$0.isWhitespace })
            }
            return Daemon(process: process, port: port, root: root, output: output, fingerprint: fingerprint)
        }

        /// The SHA-256 fingerprint of its TLS certificate, as it printed it; `nil` without TLS.
        var fingerprint: String?

        func stop() -> Int32 {
            self.process.terminate()
            self.process.waitUntilExit()
            return self.process.terminationStatus
        }
    }

    @Test func ferrydListsItsFlags() async throws {
        let help = try await Binaries.run("ferryd", ["serve", "--help"])
        #expect(help.status == 0)
        for flag in [
            "--root", "--host", "--port", "--max-connections", "--idle-timeout", "--max-file-size", "--grace-period",
            "--users", "--anonymous", "--max-login-failures", "--max-connections-per-address", "--handshake-timeout",
            "--kept-upload-hours", "--kept-upload-bytes",
        ] {
            #expect(help.stdout.contains(flag), "--help explains \(flag)")
        }
        // Durations that do not fit the clock are a usage error, not a crash.
        for (flag, value) in [("--idle-timeout", "1e300"), ("--grace-period", "inf"), ("--idle-timeout", "nan")] {
            let refused = try await Binaries.run(
                "ferryd",
                ["--root", Scratch.makeDirectory("unused").path, flag, value]
            )
            #expect(refused.status == 64, "\(flag) \(value): \(refused.stderr)")
            #expect(refused.stderr.contains("--idle-timeout must be positive"))
        }
    }

    /// Safe by default: ferryd refuses to listen where other machines can reach it unless told what anonymous
    /// clients may do, and a read-only server refuses changes with "permission denied".
    @Test func ferrydIsSafeByDefault() async throws {
        let refused = try await Binaries.run(
            "ferryd",
            ["--root", Scratch.makeDirectory("unused").path, "--host", "0.0.0.0", "--port", "0"]
        )
        #expect(refused.status == 64, "\(refused.stderr)")
        #expect(refused.stderr.contains("--anonymous read or --anonymous write"), "\(refused.stderr)")
        let help = try await Binaries.run("ferryd", ["serve", "--help"])
        #expect(help.stdout.contains("(default: 127.0.0.1)"), "\(help.stdout)")

        let root = Scratch.makeDirectory("library")
        try Data("shared".utf8).write(to: root.appendingPathComponent("shared.txt"))
        let daemon = try await Daemon.start(host: "127.0.0.1", root: root, extraArguments: ["--anonymous", "read"])
        defer { _ = daemon.stop() }
        let work = Scratch.makeDirectory("work")
        try Data("mine".utf8).write(to: work.appendingPathComponent("mine.txt"))
        let port = ["--port", "\(daemon.port)"]
        let get = try await Binaries.run("ferry", ["get", "shared.txt"] + port, currentDirectory: work)
        #expect(get.status == 0, "\(get.stderr)")
        let put = try await Binaries.run("ferry", ["put", "mine.txt"] + port, currentDirectory: work)
        #expect(put.status == 1)
        #expect(
            put.stderr.contains("STOR needs upload permission; this client has only read permission"),
            "\(put.stderr)"
        )
        let remove = try await Binaries.run("ferry", ["rm", "shared.txt"] + port)
        #expect(remove.status == 1 && remove.stderr.contains("permission"), "\(remove.stderr)")
        #expect(try Scratch.libraryContents(root) == ["shared.txt"])
    }

    @Test func ferrydServesOverIPv6AndStopsCleanlyOnSIGTERM() async throws {
        let daemon = try await Daemon.start(host: "::1")
        let listing = try await Binaries.run("ferry", ["list", "--host", "::1", "--port", "\(daemon.port)"])
        #expect(listing.status == 0, "\(listing.stderr)")
        #expect(listing.stdout.contains("empty"))
        #expect(daemon.stop() == 0)
    }

    @Test func anUploadStillRunningWhenTheGracePeriodEndsLeavesNothing() async throws {
        let root = Scratch.makeDirectory("library")
        let daemon = try await Daemon.start(root: root, extraArguments: ["--grace-period", "0.5"])
        let stalled = try await RawConnection.handshaken(port: daemon.port)
        try await stalled.send(.store(StoreRequest(name: "unfinished", size: 1000)))
        guard case .ready? = try await stalled.next() else { throw TestFailure("no READY") }
        try await stalled.send(.data(DataChunk(ByteBuffer(bytes: Array(repeating: 1, count: 500)))))
        // The upload never finishes: SIGTERM, then the grace period runs out and ferryd exits on its own.
        let started = ContinuousClock.now
        #expect(daemon.stop() == 0)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(try Scratch.libraryContents(root) == [], "no staging, nothing visible")
        await stalled.close()
    }

    @Test func ferrydRemovesStagingLeftByACrash() async throws {
        let root = Scratch.makeDirectory("library")
        let staging = root.appendingPathComponent(".ferry-staging")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: staging.appendingPathComponent(".ferry-staging-deadbeef"))
        // Where versions before the staging folder kept them.
        try Data("partial".utf8).write(to: root.appendingPathComponent(".ferry-staging-0123abcd"))
        try Data("kept".utf8).write(to: root.appendingPathComponent("kept"))
        // The area of a server that is gone (nobody holds its lock), from another machine.
        let abandoned = staging.appendingPathComponent("ferryd-elsewhere-1-abc")
        try FileManager.default.createDirectory(at: abandoned, withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: abandoned.appendingPathComponent(".ferry-staging-1"))
        // All of it untouched for two hours; and one staging file of an older version written just now, which may
        // be a running server's (an overlapping restart to upgrade): kept.
        let old = Date(timeIntervalSinceNow: -7200)
        for path in [
            staging.appendingPathComponent(".ferry-staging-deadbeef"),
            root.appendingPathComponent(".ferry-staging-0123abcd"),
            abandoned.appendingPathComponent(".ferry-staging-1"), abandoned,
        ] {
            try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path.path)
        }
        try Data("in use".utf8).write(to: root.appendingPathComponent(".ferry-staging-fresh"))
        #expect(
            try Scratch.libraryContents(root) == [
                ".ferry-staging-0123abcd", ".ferry-staging-fresh", ".ferry-staging/.ferry-staging-deadbeef",
                ".ferry-staging/ferryd-elsewhere-1-abc/.ferry-staging-1", "kept",
            ]
        )
        let daemon = try await Daemon.start(root: root)
        #expect(try Scratch.libraryContents(root) == [".ferry-staging-fresh", "kept"])
        _ = daemon.stop()
    }

    @Test func ferrydRefusesALibraryWhoseStagingFolderIsNotAFolder() async throws {
        let root = Scratch.makeDirectory("library")
        try Data("in the way".utf8).write(to: root.appendingPathComponent(".ferry-staging"))
        let errors = Pipe()
        let process = try Binaries.launch("ferryd", ["--root", root.path, "--port", "0"], stderr: errors)
        let started = ContinuousClock.now
        while process.isRunning, ContinuousClock.now - started < .seconds(10) {
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("ferryd served a library whose staging folder is a file")
        }
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(message.contains("staging folder must be a folder"), "\(message)")
        #expect(try Data(contentsOf: root.appendingPathComponent(".ferry-staging")) == Data("in the way".utf8))
    }

    @Test func subcommandsForScripts() async throws {
        let daemon = try await Daemon.start()
        defer { _ = daemon.stop() }
        let port = ["--port", "\(daemon.port)"]
        let work = Scratch.makeDirectory("work")
        try Data("hello ##".utf8).write(to: work.appendingPathComponent("greeting.txt"))

        let put = try await Binaries.run("ferry", ["put", "greeting.txt"] + port, currentDirectory: work)
        #expect(put.status == 0, "\(put.stderr)")
        #expect(put.stderr.isEmpty, "no progress bar when stderr is not a terminal")
        let again = try await Binaries.run("ferry", ["put", "greeting.txt"] + port, currentDirectory: work)
        #expect(again.status != 0)
        #expect(again.stderr.hasPrefix("ferry: 'greeting.txt' already exists on the server (add --overwrite"))
        #expect(again.stderr.filter { $0 == "\n" }.count == 1, "one line on stderr")
        let renamed = try await Binaries.run(
            "ferry",
            ["put", "greeting.txt", "--as", "copy.txt", "--overwrite"] + port,
            currentDirectory: work
        )
        #expect(renamed.status == 0)

        let json = try await Binaries.run("ferry", ["list", "--json"] + port)
        #expect(json.status == 0)
        let entries = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(entries?.compactMap { $0["name"] as? String } == ["copy.txt", "greeting.txt"])
        #expect(entries?.compactMap { $0["size"] as? Int } == [8, 8])
        let modified = entries?.first?["modified"] as? String ?? ""
        #expect(modified.hasSuffix("Z") && modified.contains("T"), "RFC 3339: \(modified)")

        let table = try await Binaries.run("ferry", ["list"] + port)
        #expect(table.stdout.contains("8 B") && table.stdout.contains("greeting.txt"))

        let get = try await Binaries.run(
            "ferry",
            ["get", "greeting.txt", "--output", "back.txt"] + port,
            currentDirectory: work
        )
        #expect(get.status == 0)
        #expect(try Data(contentsOf: work.appendingPathComponent("back.txt")) == Data("hello ##".utf8))
        let clobber = try await Binaries.run(
            "ferry",
            ["get", "greeting.txt", "--output", "back.txt"] + port,
            currentDirectory: work
        )
        #expect(clobber.status != 0, "an existing local file is not replaced without --force")
        let forced = try await Binaries.run(
            "ferry",
            ["get", "greeting.txt", "--output", "back.txt", "--force"] + port,
            currentDirectory: work
        )
        #expect(forced.status == 0)

        let missing = try await Binaries.run("ferry", ["get", "missing"] + port, currentDirectory: work)
        #expect(missing.status != 0)
        #expect(missing.stderr == "ferry: no such file: 'missing'\n")
        let bad = try await Binaries.run("ferry", ["get", "../etc/passwd"] + port, currentDirectory: work)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("invalid name"))

        // Several files in one session each way.
        for index in 0..<3 {
            try Data("file \(index)".utf8).write(to: work.appendingPathComponent("many-\(index)"))
        }
        let putMany = try await Binaries.run(
            "ferry",
            ["put", "many-0", "many-1", "many-2"] + port,
            currentDirectory: work
        )
        #expect(putMany.status == 0, "\(putMany.stderr)")
        try FileManager.default.createDirectory(
            at: work.appendingPathComponent("back"),
            withIntermediateDirectories: true
        )
        let getMany = try await Binaries.run(
            "ferry",
            ["get", "many-0", "many-1", "many-2", "-o", "back"] + port,
            currentDirectory: work
        )
        #expect(getMany.status == 0, "\(getMany.stderr)")
        for index in 0..<3 {
            #expect(
                try Data(contentsOf: work.appendingPathComponent("back/many-\(index)")) == Data("file \(index)".utf8)
            )
        }

        // A folder uploads the regular files directly inside it; --all downloads the whole library. A failure
        // among several files is one line naming the file, and the others still go through.
        let folder = work.appendingPathComponent("folder")
        try FileManager.default.createDirectory(
            at: folder.appendingPathComponent("sub"),
            withIntermediateDirectories: true
        )
        try Data("one".utf8).write(to: folder.appendingPathComponent("f1"))
        try Data("two".utf8).write(to: folder.appendingPathComponent("f2"))
        try Data("hidden".utf8).write(to: folder.appendingPathComponent(".hidden"))
        try Data("in sub".utf8).write(to: folder.appendingPathComponent("sub/f3"))
        // Links inside the folder are skipped, whatever they lead to.
        try FileManager.default.createSymbolicLink(
            atPath: folder.appendingPathComponent("link-to-f1").path,
            withDestinationPath: "f1"
        )
        try FileManager.default.createSymbolicLink(
            atPath: folder.appendingPathComponent("link-to-sub").path,
            withDestinationPath: "sub"
        )
        let putFolder = try await Binaries.run(
            "ferry",
            ["put", "folder", "greeting.txt"] + port,
            currentDirectory: work
        )
        #expect(putFolder.status != 0, "greeting.txt exists on the server")
        #expect(putFolder.stdout.contains("folder/f1") && putFolder.stdout.contains("folder/f2"))
        #expect(!putFolder.stdout.contains("folder/link-to-f1"), "links inside a folder are not followed")
        #expect(
            putFolder.stderr.split(separator: "\n").sorted() == [
                "ferry: 1 of 3 files not stored",
                "ferry: folder: skipped 4 entries (hidden files, links and folders are not uploaded)",
                "ferry: greeting.txt: 'greeting.txt' already exists on the server (add --overwrite to replace it)",
            ],
            "\(putFolder.stderr)"
        )
        // The folder --output names is made if missing (with the folders above it).
        let mirror = work.appendingPathComponent("new/mirror")
        let getAll = try await Binaries.run(
            "ferry",
            ["get", "--all", "-o", "new/mirror"] + port,
            currentDirectory: work
        )
        #expect(getAll.status == 0, "\(getAll.stderr)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: mirror.path).sorted() == [
                "copy.txt", "f1", "f2", "greeting.txt", "many-0", "many-1", "many-2",
            ]
        )
        #expect(try Data(contentsOf: mirror.appendingPathComponent("f2")) == Data("two".utf8))
        let conflicting = try await Binaries.run("ferry", ["get", "--all", "f1"] + port, currentDirectory: work)
        #expect(conflicting.status != 0 && conflicting.stderr.contains("--all takes no names"))

        let unreachable = try await Binaries.run("ferry", ["list", "--port", "1"])
        #expect(unreachable.status != 0)
        #expect(unreachable.stderr.hasPrefix("ferry: server unreachable"))
    }

    @Test func theShellTakesCommandsFromAPipe() async throws {
        let daemon = try await Daemon.start()
        defer { _ = daemon.stop() }
        let work = Scratch.makeDirectory("work")
        try Data("piped".utf8).write(to: work.appendingPathComponent("p.txt"))
        let session = try await Binaries.run(
            "ferry",
            ["--port", "\(daemon.port)"],
            input:
                "help\nput p.txt\nput p.txt\nlist\nget p.txt\nget p.txt --force\nput p.txt --overwrite\nget nothing-here\nfrobnicate\nexit\n",
            currentDirectory: work
        )
        #expect(session.stdout.contains("get NAME"), "help prints the menu")
        #expect(session.stdout.contains("stored p.txt"))
        #expect(session.stdout.contains("1 file"))
        #expect(session.stderr.contains("'p.txt' already exists"), "get refuses to overwrite the local file")
        #expect(session.stdout.contains("received p.txt"), "--force replaces the local file")
        #expect(
            session.stdout.components(separatedBy: "stored p.txt").count == 3,
            "--overwrite replaces the remote one"
        )
        #expect(session.stderr.contains("no such file: 'nothing-here'"))
        #expect(session.stdout.contains("unknown command 'frobnicate'"))
        #expect(session.status != 0, "a piped session with failures exits non-zero")

        #expect(session.stderr.contains("type 'put p.txt --overwrite' to replace it"), "\(session.stderr)")

        let empty = work.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let nothing = try await Binaries.run(
            "ferry",
            ["put", "empty", "--port", "\(daemon.port)"],
            currentDirectory: work
        )
        #expect(nothing.status == 0)
        #expect(nothing.stdout.contains("nothing to upload in 'empty'"), "\(nothing.stdout)")

        let clean = try await Binaries.run("ferry", ["--port", "\(daemon.port)"], input: "list\n")
        #expect(clean.status == 0, "end of input ends the shell; all commands worked")
    }

    /// `list --json` writes bytes directly: names with a quote escaped, the rest copied; times to the nanosecond.
    @Test func listJSONIsExactForQuotedNamesAndNanoseconds() async throws {
        let listing = try await Self.scriptedServer(
            answer: RawConnection.encode(
                .listEntries([
                    ListEntry(name: "a \"quoted\" é name", size: 5, modified: 1_700_000_000_123_456_789),
                    ListEntry(name: "plain.txt", size: 0, modified: 1_700_000_000_000_000_000),
                    ListEntry(name: "tenth.txt", size: 1 << 40, modified: 1_700_000_000_100_000_000),
                    ListEntry(name: "leap", size: 10, modified: 951_782_400_000_000_000),
                    ListEntry(name: "before", size: 9, modified: -1),
                    ListEntry(name: "epoch", size: 99, modified: 0),
                    ListEntry(name: "1900", size: 100, modified: -2_208_988_799_999_999_999),
                ])
            ) + RawConnection.encode(.listEnd(ListEnd(count: 7)))
        )
        defer { Task { await listing.stop() } }
        let json = try await Binaries.run("ferry", ["list", "--json", "--port", "\(listing.port)"])
        #expect(json.status == 0, "\(json.stderr)")
        #expect(
            json.stdout
                == #"[{"name": "a \"quoted\" é name", "size": 5, "modified": "2023-11-14T22:13:20.123456789Z"},"#
                + "\n " + #"{"name": "plain.txt", "size": 0, "modified": "2023-11-14T22:13:20Z"},"#
                + "\n "
                + #"{"name": "tenth.txt", "size": 1099511627776, "modified": "2023-11-14T22:13:20.100000000Z"},"#
                + "\n " + #"{"name": "leap", "size": 10, "modified": "2000-02-29T00:00:00Z"},"#
                + "\n " + #"{"name": "before", "size": 9, "modified": "1969-12-31T23:59:59.999999999Z"},"#
                + "\n " + #"{"name": "epoch", "size": 99, "modified": "1970-01-01T00:00:00Z"},"#
                + "\n " + #"{"name": "1900", "size": 100, "modified": "1900-01-01T00:00:00.000000001Z"}]"#
                + "\n",
            "\(json.stdout)"
        )
    }

    /// The dates `list --json` spells from the day count are `gmtime`'s, all over the wire's range: random
    /// nanoseconds, random whole seconds from 1843 to 2096, and the edges.
    @Test func listJSONDatesAreGmtimesAcrossTheRange() async throws {
        var random = SystemRandomNumberGenerator()
        var times: [Int64] = [.min, .max, -1, 0, 1, -86_400_000_000_000, 951_782_400_000_000_000]
        for _ in 0..<300 {
            times.append(Int64.random(in: .min ... .max, using: &random))
        }
        for _ in 0..<100 {
            times.append(Int64.random(in: -4_000_000_000...4_000_000_000, using: &random) * 1_000_000_000)
        }
        let entries = times.enumerated().map { ListEntry(name: "t\($0.offset)", size: 0, modified: $0.element) }
        let listing = try await Self.scriptedServer(
            answer: RawConnection.encode(.listEntries(entries))
                + RawConnection.encode(.listEnd(ListEnd(count: UInt64(entries.count))))
        )
        defer { Task { await listing.stop() } }
        let json = try await Binaries.run("ferry", ["list", "--json", "--port", "\(listing.port)"])
        #expect(json.status == 0, "\(json.stderr)")
        let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]] ?? []
        var shown: [String: String] = [:]
        for entry in parsed {
            if let name = entry["name"] as? String, let modified = entry["modified"] as? String {
                shown[name] = modified
            }
        }
        #expect(shown.count == times.count)
        for (index, time) in times.enumerated() {
            #expect(shown["t\(index)"] == Self.gmtimeRFC3339(time), "\(time)")
        }
    }

    /// RFC 3339 as `gmtime` gives it, with the nanoseconds when there are any.
    private static func gmtimeRFC3339(_ nanoseconds: Int64) -> String {
        let (quotient, remainder) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        let (seconds, fraction) = remainder < 0 ? (quotient - 1, remainder + 1_000_000_000) : (quotient, remainder)
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var text = String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d",
            parts.tm_year + 1900,
            parts.tm_mon + 1,
            parts.tm_mday,
            parts.tm_hour,
            parts.tm_min,
            parts.tm_sec
        )
        if fraction > 0 {
            text += String(format: ".%09lld", fraction)
        }
        return text + "Z"
    }

    /// What a server sends is data, never an instruction: timestamps at the ends of their range, a size of 16 EiB and
    /// an error message full of terminal escape sequences must neither stop `ferry` nor reach the terminal as they are.
    @Test func aHostileServersBytesNeitherCrashFerryNorDriveTheTerminal() async throws {
        let listing = try await Self.scriptedServer(
            answer: RawConnection.encode(
                .listEntries([
                    ListEntry(name: "ancient.txt", size: .max, modified: .min),
                    ListEntry(name: "future.txt", size: 1, modified: .max),
                ])
            ) + RawConnection.encode(.listEnd(ListEnd(count: 2)))
        )
        defer { Task { await listing.stop() } }
        let table = try await Binaries.run("ferry", ["list", "--port", "\(listing.port)"])
        #expect(table.status == 0, "\(table.stderr)")
        #expect(
            table.stdout.contains("ancient.txt") && table.stdout.contains("future.txt")
                && table.stdout.contains("2 files")
        )
        let json = try await Binaries.run("ferry", ["list", "--json", "--port", "\(listing.port)"])
        #expect(json.status == 0, "\(json.stderr)")
        let entries = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]]
        #expect(entries?.count == 2)
        // The times are spelled from the day count, not by gmtime: exact at both ends of the wire's range.
        #expect(entries?.first?["modified"] as? String == "1677-09-21T00:12:43.145224192Z")
        #expect(entries?.last?["modified"] as? String == "2262-04-11T23:47:16.854775807Z")
        #expect(entries?.first?["size"] as? UInt64 == .max)

        let escapes = "gone\u{1B}[2J\u{1B}]52;c;aGk=\u{07}\u{9B}31m"
        let refusal = try await Self.scriptedServer(
            answer: RawConnection.encode(.error(ErrorReply(code: .noSuchFile, message: escapes)))
        )
        defer { Task { await refusal.stop() } }
        let work = Scratch.makeDirectory("hostile")
        let get = try await Binaries.run(
            "ferry",
            ["get", "x.txt", "--port", "\(refusal.port)"],
            currentDirectory: work
        )
        #expect(get.status == 1)
        #expect(get.stderr == "ferry: gone\\u{1b}[2J\\u{1b}]52;c;aGk=\\u{7}\\u{9b}31m\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: work.path).isEmpty)
    }

    /// Ctrl-C during `ferry get` removes the hidden partial download beside the target, which nothing else would.
    /// Ctrl-C keeps what arrived, with its record, for the next `get` to resume (ResumeTests resumes one).
    @Test func anInterruptedDownloadKeepsWhatArrivedToResume() async throws {
        // The start of a 10 MiB file, then nothing: the download waits with its partial file beside the target.
        let server = try await Self.scriptedServer(
            answer: RawConnection.encode(.fileInfo(FileInfo(size: 10 << 20, modified: 0)))
                + RawConnection.encode(.data(DataChunk(ByteBuffer(bytes: Scratch.randomBytes(1 << 20))))),
            closing: false
        )
        defer { Task { await server.stop() } }
        let work = Scratch.makeDirectory("interrupted")
        let get = try Binaries.launch("ferry", ["get", "big.bin", "--port", "\(server.port)"], currentDirectory: work)
        var partial: [String] = []
        for _ in 0..<400 where partial.isEmpty {
            try await Task.sleep(for: .milliseconds(25))
            partial = try FileManager.default.contentsOfDirectory(atPath: work.path)
        }
        #expect(partial == [".big.bin.ferry-partial"], "\(partial)")
        get.interrupt()
        // Polled: waitUntilExit() would block one of the few threads the in-process servers of other tests share.
        for _ in 0..<400 where get.isRunning {
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(get.terminationReason == .exit && get.terminationStatus == 128 + SIGINT)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: work.path).sorted() == [
                ".big.bin.ferry-partial", ".big.bin.ferry-partial.meta",
            ]
        )
        let record = try String(contentsOf: work.appendingPathComponent(".big.bin.ferry-partial.meta"), encoding: .utf8)
        #expect(record.contains("kept 1048576\n") && record.contains("size 10485760\n"), "\(record)")
    }

    /// A server that streams listing entries without end cannot take ferry's memory: past its limit on entries the
    /// listing is refused with a clear error (before, `ferry list` grew to 2.7 GiB in 8 s).
    @Test func getPreserveTimeKeepsTheServersModificationTime() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        // A file sent whole and one streamed, each with a time of its own, to the nanosecond.
        let times: [String: Int64] = ["small": 1_600_000_000_123_456_789, "large": 1_500_000_000_987_654_321]
        for (name, size) in [("small", 1000), ("large", 1 << 20)] {
            let path = library.appendingPathComponent(name).path
            try Data(Scratch.randomBytes(size)).write(to: URL(fileURLWithPath: path))
            let time = times[name] ?? 0
            var stamps = [
                timespec(tv_sec: 0, tv_nsec: (1 << 30) - 2),  // UTIME_OMIT: the access time stays
                timespec(tv_sec: Int(time / 1_000_000_000), tv_nsec: Int(time % 1_000_000_000)),
            ]
            #expect(utimensat(AT_FDCWD, path, &stamps, 0) == 0)
        }
        let daemon = try await Daemon.start(root: library)
        defer { _ = daemon.stop() }
        let get = try await Binaries.run(
            "ferry",
            ["get", "small", "large", "--preserve-time", "--port", "\(daemon.port)"],
            currentDirectory: work
        )
        #expect(get.status == 0, "\(get.stderr)")
        for (name, time) in times {
            var info = stat()
            #expect(stat(work.appendingPathComponent(name).path, &info) == 0)
            #expect(Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec) == time, "\(name)")
        }
        // Without the flag, the time is the download's.
        let plain = try await Binaries.run(
            "ferry",
            ["get", "small", "-o", "now", "--port", "\(daemon.port)"],
            currentDirectory: work
        )
        #expect(plain.status == 0)
        var info = stat()
        #expect(stat(work.appendingPathComponent("now").path, &info) == 0 && Int(info.st_mtim.tv_sec) > 1_700_000_000)
    }

    static let hasLineEditing = ["/usr/lib/x86_64-linux-gnu/libedit.so.2", "/usr/lib/aarch64-linux-gnu/libedit.so.2"]
        .contains { FileManager.default.fileExists(atPath: $0) }

    /// Tab after get completes a remote name from the listing the shell keeps (libedit, on a terminal).
    @Test(.enabled(if: Binaries.canProvideTerminal && Self.hasLineEditing, "needs script(1) and libedit"))
    func theShellCompletesRemoteNamesWithTab() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        try Data("quarterly".utf8).write(to: library.appendingPathComponent("report-2026.pdf"))
        try Data("other".utf8).write(to: library.appendingPathComponent("notes.txt"))
        let daemon = try await Daemon.start(root: library)
        defer { _ = daemon.stop() }
        let shell = try await Binaries.run(
            "ferry",
            ["--port", "\(daemon.port)"],
            input: "get rep\t\nexit\n",
            currentDirectory: work,
            underTerminal: true
        )
        #expect(shell.stdout.contains("received report-2026.pdf"), "\(shell.stdout)")
        #expect(try Data(contentsOf: work.appendingPathComponent("report-2026.pdf")) == Data("quarterly".utf8))
    }

    /// Several files show one overall progress line (files done of all, bytes of all), not a bar per file; the
    /// result lines stay one per file.
    @Test(.enabled(if: Binaries.canProvideTerminal, "needs script(1)"))
    func severalFilesShowOneOverallProgressLine() async throws {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        for name in ["a", "b", "c"] {
            try Data(Scratch.randomBytes(300_000)).write(to: library.appendingPathComponent(name))
        }
        let daemon = try await Daemon.start(root: library)
        defer { _ = daemon.stop() }
        let get = try await Binaries.run(
            "ferry",
            ["get", "a", "b", "c", "--port", "\(daemon.port)"],
            currentDirectory: work,
            underTerminal: true
        )
        #expect(get.status == 0, "\(get.stdout)")
        // On the terminal (stdout and stderr alike): the overall line, whose total grows as files announce theirs.
        #expect(get.stdout.contains("/3 files ["), "\(get.stdout)")
        #expect(!get.stdout.contains("\ra ["), "no bar of a file's own: \(get.stdout)")
        for name in ["a", "b", "c"] {
            #expect(get.stdout.contains("received \(name) → \(name) (293 KiB, verified)"), "\(get.stdout)")
        }
    }

    @Test func aListingPastTheClientsLimitIsRefused() async throws {
        let batches = (0..<15).map { batch in
            RawConnection.encode(
                .listEntries((0..<100).map { ListEntry(name: "file-\(batch)-\($0)", size: 1, modified: 0) })
            )
        }
        let server = try await Self.scriptedServer(answer: batches.flatMap { $0 }, closing: false)
        defer { Task { await server.stop() } }
        let started = ContinuousClock.now
        let list = try await Binaries.run("ferry", ["list", "--max-entries", "1000", "--port", "\(server.port)"])
        #expect(list.status == 1)
        #expect(list.stderr.contains("the listing is larger than this client takes (1000 entries"), "\(list.stderr)")
        #expect(ContinuousClock.now - started < .seconds(10), "refused at once, not at a timeout")
        let work = Scratch.makeDirectory("hostile-all")
        let getAll = try await Binaries.run(
            "ferry",
            ["get", "--all", "--max-entries", "1000", "--port", "\(server.port)"],
            currentDirectory: work
        )
        #expect(getAll.status == 1 && getAll.stderr.contains("larger than this client takes"), "\(getAll.stderr)")
    }

    /// Interrupted at any moment, many times, two at once, `ferry get --all` leaves no partial file: none is
    /// created once the signal's clean-up has begun. (One run left 7 of 24 on a loaded machine.)
    @Test func interruptedDownloadsNeverLeavePartialFiles() async throws {
        let root = Scratch.makeDirectory("library")
        for index in 0..<120 {
            try Data(Scratch.randomBytes(index % 10 == 0 ? 2 << 20 : 60_000)).write(
                to: root.appendingPathComponent("f\(index)")
            )
        }
        let daemon = try await Daemon.start(root: root)
        defer { _ = daemon.stop() }
        let signals = [SIGINT, SIGTERM, SIGHUP]
        var left: [String] = []
        for round in 0..<12 {
            // On a disk: each group of small files is flushed file by file there, which keeps a group's job
            // creating files long enough for a signal to land in the middle of it.
            let folders = (0..<2).map { Scratch.makeDirectory("interrupted-\(round)-\($0)", onDisk: true) }
            let downloads = try folders.map { folder in
                try Binaries.launch("ferry", ["get", "--all", "-o", folder.path, "--port", "\(daemon.port)"])
            }
            try await Task.sleep(for: .milliseconds(30 + 25 * (round % 8)))
            for download in downloads { kill(download.processIdentifier, signals[round % 3]) }
            for download in downloads {
                for _ in 0..<400 where download.isRunning {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            for folder in folders {
                left += try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
                    $0.contains(".ferry-part-")
                }
            }
        }
        #expect(left.isEmpty, "partial files left: \(left)")
    }

    /// A server that greets like Ferry at once, and sends `answer` once the client's first request has arrived: anything
    /// past the client's own greeting, which is as long as this one (a HELLO's payload has a fixed size).
    private static func scriptedServer(answer: [UInt8], closing: Bool = true) async throws -> TextListener {
        let greeting = Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello))
        return try await TextListener.start(
            script: [
                (after: 0, reply: ByteBuffer(bytes: greeting)),
                (after: greeting.count + 1, reply: ByteBuffer(bytes: answer)),
            ],
            closing: closing
        )
    }
}
