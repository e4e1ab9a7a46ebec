import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// ferryd and ferry run by an ordinary user, as people run them: when the tests run as root (CI does), the binaries
/// run as `nobody` (see ``User``). A socket option only root may set once made every connection fail for everyone
/// else, and the suite, running as root, did not notice.
@Suite("ferryd and ferry as an ordinary user", .enabled(if: User.canRunUnprivileged))
struct OrdinaryUserTests {
    typealias Daemon = CommandLineTests.Daemon

    /// A library and a working folder that belong to the ordinary user.
    private static func folders() throws -> (library: URL, work: URL) {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        try User.handOver(library)
        try User.handOver(work)
        return (library, work)
    }

    @Test func aRoundTripAsAnOrdinaryUser() async throws {
        let (library, work) = try Self.folders()
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser)
        defer { _ = daemon.stop() }
        let port = ["--port", "\(daemon.port)"]
        let original = Scratch.randomBytes(3 << 20)
        try Data(original).write(to: work.appendingPathComponent("big.bin"))
        try Data("small".utf8).write(to: work.appendingPathComponent("small.txt"))
        try User.handOver(work)

        let put = try await Binaries.run(
            "ferry",
            ["put", "big.bin", "small.txt"] + port,
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(put.status == 0, "\(put.stderr)")
        let list = try await Binaries.run("ferry", ["list", "--json"] + port, as: .ordinaryUser)
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("\"big.bin\"") && list.stdout.contains("\"small.txt\""), "\(list.stdout)")

        let mirror = work.appendingPathComponent("mirror")
        try FileManager.default.createDirectory(at: mirror, withIntermediateDirectories: true)
        try User.handOver(mirror)
        let get = try await Binaries.run(
            "ferry",
            ["get", "--all", "--output", mirror.path] + port,
            as: .ordinaryUser
        )
        #expect(get.status == 0, "\(get.stderr)")
        #expect(sameBytes([UInt8](try Data(contentsOf: mirror.appendingPathComponent("big.bin"))), original))
        #expect(try Data(contentsOf: mirror.appendingPathComponent("small.txt")) == Data("small".utf8))
        if getuid() == 0 {
            var info = stat()
            #expect(stat(library.appendingPathComponent("big.bin").path, &info) == 0)
            #expect(info.st_uid == User.ordinaryID, "ferryd really ran as the ordinary user")
        }
    }

    @Test func failuresAreReportedToAnOrdinaryUser() async throws {
        let (library, work) = try Self.folders()
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser)
        defer { _ = daemon.stop() }
        let port = ["--port", "\(daemon.port)"]

        let missing = try await Binaries.run(
            "ferry",
            ["get", "no-such-file"] + port,
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no such file: 'no-such-file'"), "\(missing.stderr)")

        let unreachable = try await Binaries.run("ferry", ["list", "--port", "1"], as: .ordinaryUser)
        #expect(unreachable.status != 0)
        #expect(unreachable.stderr.hasPrefix("ferry: server unreachable"), "\(unreachable.stderr)")
        #expect(!unreachable.stderr.contains("Permission denied"), "\(unreachable.stderr)")
    }

    /// A library the server may read but not write: downloads work, and uploads are refused with the real reason
    /// (it was "No such file or directory", from a staging folder whose creation had failed unnoticed).
    @Test func aLibraryTheServerMayNotWriteServesAndSaysWhyUploadsAreRefused() async throws {
        guard getuid() == 0 else { return }  // the library must belong to someone else than the server's user
        let library = Scratch.makeDirectory("library")
        try Data("readable".utf8).write(to: library.appendingPathComponent("r.txt"))
        let work = Scratch.makeDirectory("work")
        try Data("new".utf8).write(to: work.appendingPathComponent("new.txt"))
        try User.handOver(work)
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser)
        defer { _ = daemon.stop() }
        let port = ["--port", "\(daemon.port)"]
        let get = try await Binaries.run("ferry", ["get", "r.txt"] + port, as: .ordinaryUser, currentDirectory: work)
        #expect(get.status == 0, "\(get.stderr)")
        let put = try await Binaries.run("ferry", ["put", "new.txt"] + port, as: .ordinaryUser, currentDirectory: work)
        #expect(put.status != 0)
        #expect(put.stderr.contains("Permission denied"), "\(put.stderr)")
        #expect(!put.stderr.contains("No such file"), "\(put.stderr)")
    }

    @Test func theShellAsAnOrdinaryUser() async throws {
        let (library, work) = try Self.folders()
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser)
        defer { _ = daemon.stop() }
        try Data("piped".utf8).write(to: work.appendingPathComponent("p.txt"))
        try User.handOver(work)
        let session = try await Binaries.run(
            "ferry",
            ["--port", "\(daemon.port)"],
            as: .ordinaryUser,
            input: "put p.txt\nlist\nget p.txt --force\nget nothing-here\nexit\n",
            currentDirectory: work
        )
        #expect(session.stdout.contains("stored p.txt"), "\(session.stdout) \(session.stderr)")
        #expect(session.stdout.contains("received p.txt"))
        #expect(session.stderr.contains("no such file: 'nothing-here'"))
        #expect(session.status != 0, "one command failed")
    }

    @Test func deleteAndRenameAsAnOrdinaryUser() async throws {
        let (library, work) = try Self.folders()
        for name in ["a.txt", "b.txt", "my notes.txt"] {
            try Data(name.utf8).write(to: library.appendingPathComponent(name))
        }
        try User.handOver(library)
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser)
        defer { _ = daemon.stop() }
        let port = ["--port", "\(daemon.port)"]
        let removed = try await Binaries.run("ferry", ["rm", "a.txt", "missing.txt"] + port, as: .ordinaryUser)
        #expect(removed.status == 1)
        #expect(removed.stdout.contains("deleted a.txt"), "\(removed.stdout)")
        #expect(removed.stderr.contains("missing.txt: no such file"), "\(removed.stderr)")
        let moved = try await Binaries.run("ferry", ["mv", "b.txt", "c.txt"] + port, as: .ordinaryUser)
        #expect(moved.status == 0, "\(moved.stderr)")
        let refused = try await Binaries.run("ferry", ["mv", "c.txt", "my notes.txt"] + port, as: .ordinaryUser)
        #expect(refused.status == 1 && refused.stderr.contains("file exists"), "\(refused.stderr)")
        let session = try await Binaries.run(
            "ferry",
            port,
            as: .ordinaryUser,
            input: "help\nrename \"my notes.txt\" notes.txt\ndelete c.txt\nlist\nexit\n",
            currentDirectory: work
        )
        #expect(session.stdout.contains("delete NAME") && session.stdout.contains("rename OLD NEW"), "the menu")
        #expect(session.stdout.contains("renamed my notes.txt → notes.txt"), "\(session.stdout) \(session.stderr)")
        #expect(session.stdout.contains("deleted c.txt"))
        #expect(session.status == 0, "\(session.stderr)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: library.path).filter { !$0.hasPrefix(".") } == [
                "notes.txt"
            ]
        )
    }

    /// Connections ferryd cannot take (no descriptors left) are turned away or wait; the server keeps accepting.
    @Test func connectionsThatCannotBeSetUpNeverStopTheServer() async throws {
        let (library, _) = try Self.folders()
        let daemon = try await Daemon.start(root: library, as: .ordinaryUser, limits: ["--nofile=40:40"])
        defer { _ = daemon.stop() }
        var sockets: [Int32] = []
        for _ in 0..<60 {
            if let socket = try? LoopbackSocket.connect(port: daemon.port) { sockets.append(socket) }
        }
        try await Task.sleep(for: .milliseconds(300))
        for socket in sockets { close(socket) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(daemon.process.isRunning, "ferryd still runs")
        let list = try await Binaries.run("ferry", ["list", "--port", "\(daemon.port)"], as: .ordinaryUser)
        #expect(list.status == 0, "\(list.stderr)")
    }
}
