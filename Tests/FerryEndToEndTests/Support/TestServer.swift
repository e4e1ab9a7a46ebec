import FerryClient
import FerryServer
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A real server on a loopback port, over a fresh temporary library, for the duration of one test.
struct TestServer: Sendable {
    let port: Int
    let root: URL
    let group: ServiceGroup

    var client: FerryClient {
        FerryClient(host: "127.0.0.1", port: self.port)
    }

    func path(_ name: String) -> String {
        self.root.appendingPathComponent(name).path
    }

    /// Every name in the library folder, hidden ones included, and every staging file: what a test checks for
    /// leftovers (see ``Scratch/libraryContents(_:)``).
    func folderContents() throws -> [String] {
        try Scratch.libraryContents(self.root)
    }

    /// The names of the files that have a checksum table (`.ferry-checksums`).
    func checksumTables() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: self.root.appendingPathComponent(".ferry-checksums").path)
            .sorted()
    }

    func write(_ name: String, _ bytes: [UInt8]) throws {
        try Data(bytes).write(to: self.root.appendingPathComponent(name))
    }

    func contents(of name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: self.root.appendingPathComponent(name)))
    }

    static func run<Result: Sendable>(
        configuration: ServerConfiguration = ServerConfiguration(host: "127.0.0.1", port: 0),
        root: URL? = nil,
        _ body: @Sendable (TestServer) async throws -> Result
    ) async throws -> Result {
        let root = root ?? Scratch.makeDirectory("library")
        let library = try await FileLibrary.open(at: root.path)
        let (addresses, continuation) = AsyncStream<SocketAddress>.makeStream()
        var configuration = configuration
        configuration.host = "127.0.0.1"
        configuration.port = 0
        let logger = Logger(label: "test-server", factory: { _ in SwiftLogNoOpLogHandler() })
        let server = FerryServer(configuration: configuration, library: library, logger: logger) { address in
            continuation.yield(address)
            continuation.finish()
        }
        let group = ServiceGroup(services: [server], logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = addresses.makeAsyncIterator()
            guard let port = await iterator.next()?.port else {
                throw TestFailure("the server did not start")
            }
            let testServer = TestServer(port: port, root: root, group: group)
            do {
                let result = try await body(testServer)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                tasks.cancelAll()
                throw error
            }
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Temporary folders under one root per test process (in `/dev/shm` where it has 2 GiB free, and one in the
/// temporary folder for tests that need a disk); tests never share one. The roots are removed when the process exits, and roots left
/// by test processes that no longer run (a crash, a kill) are removed by the next run: a run writes about half a
/// gigabyte.
enum Scratch {
    /// Every name in a library folder, hidden ones included, but for the server's folder of checksum tables.
    /// The library's names but for its two folders, and the staging folder's names as `.ferry-staging/NAME`: what a
    /// test checks for leftovers.
    static func libraryContents(_ folder: URL) throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0 != ".ferry-checksums" && $0 != ".ferry-staging" && $0 != ".ferry-tls" }
        return (names + Self.stagedFiles(folder)).sorted()
    }

    /// The files in a library's `.ferry-staging`, as `.ferry-staging/NAME` or, in a server's own area,
    /// `.ferry-staging/AREA/NAME` (the areas themselves are not listed: a running server always has one). Of the
    /// uploads kept to be resumed (`.ferry-staging/.kept`), the bytes and the records of uploads not committed: the
    /// record a committed upload leaves holds no bytes.
    static func stagedFiles(_ folder: URL) -> [String] {
        let staging = folder.appendingPathComponent(".ferry-staging")
        var staged: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: staging.path)) ?? [] {
            var isFolder: ObjCBool = false
            let path = staging.appendingPathComponent(entry).path
            if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue {
                staged += ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { name in
                    guard name != ".lock" else { return false }
                    guard entry == ".kept", name.hasSuffix(".upload") else { return true }
                    let record = (try? String(contentsOfFile: path + "/" + name, encoding: .utf8)) ?? ""
                    return !record.contains("\nstate committed\n")
                }
                .map { ".ferry-staging/\(entry)/\($0)" }
            } else {
                staged.append(".ferry-staging/\(entry)")
            }
        }
        return staged
    }

    /// A new, empty folder for one test. In memory (tmpfs) where the system has one with room, unless `onDisk`.
    ///
    /// On a disk, creating thousands of small files in folders whose neighbours earlier runs had just removed took
    /// ext4 seconds (its inode allocator skips inodes deleted moments ago), and tests create them on the two
    /// cooperative threads that the in-process servers share: long enough to trip their 2-second idle timeouts.
    static func makeDirectory(_ label: String, onDisk: Bool = false) -> URL {
        let root = onDisk ? Self.diskRoot : Self.root
        let url = root.appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private static let prefix = "ferry-tests-"

    /// Where tests' folders go: memory where there is a tmpfs with room for a run (a container's is often 64 MiB),
    /// the temporary folder otherwise.
    private static let root: URL = {
        var memory: ObjCBool = false
        var room = statvfs()
        guard FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &memory), memory.boolValue,
            access("/dev/shm", W_OK) == 0, statvfs("/dev/shm", &room) == 0,
            UInt64(room.f_bavail) * UInt64(room.f_frsize) >= 2 << 30
        else { return Self.diskRoot }
        return Self.ownRoot(in: URL(fileURLWithPath: "/dev/shm"))
    }()

    private static let diskRoot = Self.ownRoot(in: FileManager.default.temporaryDirectory)

    /// This process's root in `parent`, removed when the process exits; roots left there by test processes that no
    /// longer run are removed first.
    private static func ownRoot(in parent: URL) -> URL {
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        for name in leftovers where name.hasPrefix(Self.prefix) {
            // A process that no longer exists: kill(2) with signal 0 only asks.
            if let pid = pid_t(name.dropFirst(Self.prefix.count)), kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(at: parent.appendingPathComponent(name))
            }
        }
        let mine = parent.appendingPathComponent("\(Self.prefix)\(getpid())")
        Self.removedAtExit.withLock { $0.append(mine.path) }
        return mine
    }

    private static let removedAtExit: Mutex<[String]> = {
        atexit {
            for path in Scratch.removedAtExit.withLock({ $0 }) {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
        return Mutex([])
    }()

    /// Random bytes from the kernel: fast even in a debug build, so tests do not hog the cooperative threads
    /// that the in-process server shares with them.
    static func randomBytes(_ count: Int, seed: UInt64 = 0) -> [UInt8] {
        guard count > 0, let source = FileHandle(forReadingAtPath: "/dev/urandom") else { return [] }
        defer { try? source.close() }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            bytes += source.readData(ofLength: min(count - bytes.count, 16 << 20))
        }
        return bytes
    }
}

/// Whether two byte arrays are equal, compared with `memcmp`. Arrays' own `==` goes element by element through
/// generic code in a debug build: half a second for 64 MiB, during which it holds one of the two cooperative threads
/// that the in-process servers share, long enough together with another such test to trip a 2-second idle timeout.
func sameBytes(_ first: [UInt8], _ second: [UInt8]) -> Bool {
    first.count == second.count
        && first.withUnsafeBytes { a in
            second.withUnsafeBytes { b in
                guard let a = a.baseAddress, let b = b.baseAddress else { return true }
                return memcmp(a, b, first.count) == 0
            }
        }
}
