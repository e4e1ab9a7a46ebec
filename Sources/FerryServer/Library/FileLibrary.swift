import CFileCalls
import FerryProtocol
import FerryTransport
import NIOCore
public import NIOPosix
import Synchronization
public import _NIOFileSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The folder a server shares: one flat directory of regular files.
///
/// The folder is opened once, at start-up, and reached through that descriptor ever after (``PinnedFolder``), as
/// are its hidden folders, which are opened without following links: replacing the library folder or one of its
/// hidden folders by a link while the server runs leads nowhere. The server goes on serving the folder it opened,
/// also after it is moved or renamed; LIST and RETR always agree on it. Names come from the protocol's validated
/// ``FileName`` rules (no separators, no leading dot), so no request can reach outside the folder, and final
/// components are opened without following symbolic links, so a link placed in the library cannot lead out of it
/// either.
///
/// Uploads are written to a staging file in this server's own staging area (``StagingArea``), flushed
/// to disk, and published by an atomic rename into the library (``publishFile(_:as:replacing:)``) only after they
/// are verified. File data moves
/// through `_NIOFileSystem` or whole-file jobs; the metadata calls (listing, commit, clean-up) run as single jobs on
/// the I/O thread pool; a file goes to `sendfile`, which runs on an event loop, only while it is wholly in the page
/// cache: no event loop waits for the disk.
public struct FileLibrary: Sendable {
    /// The library folder's path when it was opened, for people to read. The server itself never uses it again.
    public let root: FilePath
    /// The library folder itself.
    private let folder: PinnedFolder
    /// The folder of checksum tables, or `nil` where it could not be made (a library the server may not write).
    private let checksumFolder: PinnedFolder?
    private let staging: StagingArea
    /// Uploads cut short and kept to be resumed (version 4).
    let keptUploads: KeptUploads
    let fileSystem: FileSystem
    let threadPool: NIOThreadPool
    /// The last listing, while nothing in the folder has changed.
    let listingCache: ListingCache
    /// Files this server renamed, with their status-change time just after: a download of one of them that sees
    /// that time has seen a rename, not a write (``isUnchanged(_:)``).
    private let renamed = RenamedFiles()

    /// Staging files live in a folder of their own rather than as dot-names among the files: the listing cache
    /// watches the library folder with inotify, which reports every create, write and close in it, so staging files
    /// there made each small upload queue five events instead of one (the rename into place), about 5 µs of the
    /// server's CPU per file (a C loop on tmpfs with the same watch: 21–23 against 16–20 µs per file), and every
    /// upload in progress made the cached listing stale with each of its writes.
    static let stagingPrefix = StagingArea.filePrefix

    /// The folder of ``ChunkChecksums`` tables, one per file, named like the file. A dot-name: never listed.
    static let checksumFolderName = ".ferry-checksums"
    /// Tables are written under this name in their folder, then renamed into place.
    private static let checksumTemporaryPrefix = ".tmp-"
    /// A table still being written after this long was abandoned by its server: start-up removes it. Younger ones
    /// may belong to another server sharing the library.
    private static let abandonedTableAge: Int = 3600

    /// Opens (creating if missing) the folder at `path`, and removes staging files a crash left behind and kept
    /// uploads that expired.
    public static func open(
        at path: String,
        keeping keptUploads: KeptUploadPolicy = KeptUploadPolicy(),
        threadPool: NIOThreadPool = .singleton,
        fileSystem: FileSystem = .shared
    ) async throws -> FileLibrary {
        let opened = try await threadPool.runIfActive { () throws -> OpenedFolders in
            if mkdir(path, 0o755) != 0, errno != EEXIST {
                throw LibraryError.storage("cannot create the library folder '\(path)': \(Self.describeErrno())")
            }
            let folder: PinnedFolder
            do {
                folder = try PinnedFolder.open(path)
            } catch {
                throw LibraryError.storage("cannot open the library folder: \(error)")
            }
            let shown = realpath(path, nil).map { resolved in
                defer { free(resolved) }
                return String(cString: resolved)
            }
            // Without it (a read-only library) downloads simply go without tables; never anything but a folder.
            let checksumFolder: PinnedFolder?
            do {
                checksumFolder = try folder.openFolder(Self.checksumFolderName, creatingWith: 0o755)
            } catch let error as PinningError where error.errno == ELOOP || error.errno == ENOTDIR {
                throw LibraryError.storage("\(error)")
            } catch {
                checksumFolder = nil
            }
            let staging = try StagingArea(in: folder)
            let kept = KeptUploads(
                in: folder,
                lifetime: keptUploads.lifetime,
                byteLimit: keptUploads.byteLimit,
                checkpointInterval: keptUploads.checkpointInterval
            )
            kept.sweep()
            return OpenedFolders(
                root: FilePath(shown ?? path),
                folder: folder,
                checksumFolder: checksumFolder,
                staging: staging,
                keptUploads: kept
            )
        }
        let library = FileLibrary(opened, fileSystem: fileSystem, threadPool: threadPool)
        try await library.removeLeftovers()
        return library
    }

    /// The hidden folder that keeps the server's TLS identity (a self-signed certificate and its key), out of the
    /// listing like every name that starts with a dot.
    public static let tlsFolderName = ".ferry-tls"

    /// Runs `body` with a path to the library's ``tlsFolderName`` folder, made private to the server's user (0700)
    /// if missing. A link or a file in its place is refused, never followed: the key must not land elsewhere.
    public func withTLSFolder<Result>(_ body: (String) throws -> Result) throws -> Result {
        let tlsFolder: PinnedFolder
        do {
            tlsFolder = try self.folder.openFolder(Self.tlsFolderName, creatingWith: 0o700)
        } catch {
            throw LibraryError.storage("cannot open the library's TLS folder: \(error)")
        }
        // Someone else's folder, or one others may write, could hold a key they planted.
        var info = stat()
        guard fstat(tlsFolder.descriptor, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 == 0 else {
            throw LibraryError.storage(
                "the library's \(Self.tlsFolderName) folder must belong to ferryd's user (uid \(geteuid())) and be "
                    + "private to it (mode 0700): it holds the server's private key"
            )
        }
        return try body(tlsFolder.path)
    }

    /// What ``open(at:threadPool:fileSystem:)`` opened.
    private struct OpenedFolders: Sendable {
        let root: FilePath
        let folder: PinnedFolder
        let checksumFolder: PinnedFolder?
        let staging: StagingArea
        let keptUploads: KeptUploads
    }

    private init(_ opened: OpenedFolders, fileSystem: FileSystem, threadPool: NIOThreadPool) {
        self.root = opened.root
        self.folder = opened.folder
        self.checksumFolder = opened.checksumFolder
        self.staging = opened.staging
        self.keptUploads = opened.keptUploads
        self.fileSystem = fileSystem
        self.threadPool = threadPool
        self.listingCache = ListingCache(watching: opened.folder)
    }

    /// `name` in the library, as a path through the pinned folder.
    func path(_ name: String) -> FilePath {
        FilePath(self.folder.path(of: name))
    }

    /// A fresh, random staging file name.
    private static func newStagingName() -> String {
        var random = SystemRandomNumberGenerator()
        return Self.stagingPrefix + String(random.next(), radix: 16)
    }

    // MARK: - Listing

    /// The names a listing may show: regular files with a valid name (never folders, links, dot-files or staging
    /// files), sorted by the bytes of their UTF-8. One job reads the folder. What each is
    /// (``describe(_:)``) is looked up afterwards, in batches, so a large listing can be sent while it is made.
    func listNames() async throws -> [String] {
        let root = self.folder.path
        return try await self.threadPool.runIfActive { () throws -> [String] in
            var names: [(bytes: [UInt8], name: String)] = []
            try Self.forEachEntry(in: root) { _, nameBytes, type in
                guard type == DT_REG || type == DT_UNKNOWN,
                    case .success(let name) = FileName.validate(nameBytes)
                else { return }
                names.append((nameBytes, name))
            }
            names.sort { $0.bytes.lexicographicallyPrecedes($1.bytes) }
            return names.map(\.name)
        }
    }

    /// The entries for those of `names` that are regular files, in order: one job of `stat` calls, the bulk of a
    /// listing's cost. Names that vanished or turned into something else since ``listNames()`` are left out.
    func describe(_ names: ArraySlice<String>) async throws -> [ListEntry] {
        let folder = self.folder
        let names = Array(names)
        return try await self.threadPool.runIfActive { Self.describe(names, in: folder.descriptor) }
    }

    /// The entries for those of `names` that are regular files, in order. Blocking.
    private static func describe(_ names: [String], in directory: Int32) -> [ListEntry] {
        var entries: [ListEntry] = []
        entries.reserveCapacity(names.count)
        for name in names {
            var info = stat()
            guard fstatat(directory, name, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                continue
            }
            entries.append(
                ListEntry(
                    name: name,
                    size: UInt64(clamping: info.st_size),
                    modified: Self.nanoseconds(
                        seconds: Int64(info.st_mtim.tv_sec),
                        nanoseconds: Int64(info.st_mtim.tv_nsec)
                    )
                )
            )
        }
        return entries
    }

    // MARK: - Reading

    /// Opens `name` for reading. Anything but a regular file (a link, a folder, a FIFO) is "no such file":
    /// checked before opening, so that opening can never block on a FIFO or follow a link.
    func openForReading(_ name: String) async throws -> ReadableFile {
        let path = self.path(name)
        let isRegular = try await self.threadPool.runIfActive { () -> Bool in
            var info = stat()
            return lstat(path.string, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        }
        guard isRegular else { throw LibraryError.noSuchFile(name) }
        let handle: ReadFileHandle
        do {
            handle = try await self.fileSystem.openFile(
                forReadingAt: path,
                options: OpenOptions.Read(followSymbolicLinks: false, closeOnExec: true)
            )
        } catch let error as FileSystemError where error.code == .notFound {
            throw LibraryError.noSuchFile(name)
        } catch {
            throw LibraryError.storage("cannot open '\(name)': \(error)")
        }
        do {
            let info = try await handle.info()
            guard info.type == .regular else {
                try? await handle.closeRegardlessOfCancellation()
                throw LibraryError.noSuchFile(name)
            }
            let modified = Self.nanoseconds(
                seconds: Int64(info.lastDataModificationTime.seconds),
                nanoseconds: Int64(info.lastDataModificationTime.nanoseconds)
            )
            return ReadableFile(
                handle: handle,
                size: UInt64(max(info.size, 0)),
                modified: modified,
                identity: info.platformSpecificStatus.map(FileIdentity.init),
                links: info.platformSpecificStatus.map { UInt64($0.st_nlink) } ?? 0
            )
        } catch let error as LibraryError {
            throw error
        } catch {
            try? await handle.closeRegardlessOfCancellation()
            throw LibraryError.storage("cannot inspect '\(name)': \(error)")
        }
    }

    /// Reads `name` whole if it holds at most `limit` bytes, all in one thread-pool job (open, check, read,
    /// close); returns `nil` for a larger file, which is streamed from ``openForReading(_:)`` instead.
    ///
    /// Small files are most of a library by count: one job per file instead of one per system call is what
    /// lets a session move thousands of them per second. Memory stays bounded by `limit`, the size of the chunk
    /// the streaming path holds anyway. A file whose size or modification time moved while it was read is refused
    /// (107), never sent as a mix of two versions.
    func readWhole(_ name: String, upTo limit: Int) async throws -> WholeFile? {
        let path = self.path(name).string
        return try await self.threadPool.runIfActive { try Self.readWhole(name, at: path, upTo: limit).get() }
    }

    /// ``readWhole(_:upTo:)`` for several files in one job, in order, until `budget` bytes have been read: the
    /// results are for a prefix of `names` (at least one).
    func readWhole(
        _ names: [String],
        upTo limit: Int,
        budget: Int
    ) async throws -> [Result<WholeFile?, LibraryError>] {
        let paths = names.map { self.path($0).string }
        return try await self.threadPool.runIfActive { () -> [Result<WholeFile?, LibraryError>] in
            var reads: [Result<WholeFile?, LibraryError>] = []
            var spent = 0
            var folders = OpenFolders()
            for (name, path) in zip(names, paths) {
                guard reads.isEmpty || spent < budget else { break }
                let (folder, entry) = folders.locate(path)
                let read = Self.readWhole(name, at: entry, in: folder, upTo: limit)
                if case .success(let file?) = read {
                    spent += file.bytes.readableBytes
                }
                reads.append(read)
            }
            return reads
        }
    }

    /// One file of ``readWhole(_:upTo:)``. Blocking.
    private static func readWhole(
        _ name: String,
        at path: String,
        in folder: Int32 = AT_FDCWD,
        upTo limit: Int
    ) -> Result<WholeFile?, LibraryError> {
        Result { () throws(LibraryError) -> WholeFile? in
            switch BlockingFileIO.readSmallFile(at: path, in: folder, upTo: limit, followingLinks: false) {
            case .contents(let bytes, let modified):
                return WholeFile(
                    bytes: bytes,
                    modified: Self.nanoseconds(seconds: modified.seconds, nanoseconds: modified.nanoseconds)
                )
            case .larger:
                return nil
            case .notRegular:
                throw LibraryError.noSuchFile(name)
            case .cannotOpen(let error) where error.code == ENOENT || error.code == ELOOP:
                throw LibraryError.noSuchFile(name)
            case .cannotOpen(let error):
                throw LibraryError.storage("cannot open '\(name)': \(error)")
            case .cannotRead(let error):
                throw LibraryError.storage("cannot read '\(name)': \(error)")
            case .changed:
                throw LibraryError.storage("'\(name)' changed while being read; try again")
            }
        }
    }

    /// Whether a visible file, link or folder of this name exists (links are not followed).
    func exists(_ name: String) async throws -> Bool {
        let path = self.path(name).string
        return try await self.threadPool.runIfActive {
            var info = stat()
            return lstat(path, &info) == 0
        }
    }

    // MARK: - Chunk checksums

    /// What ``openWithChecksums(_:)`` found.
    enum ChecksumLookup: Sendable {
        /// A table that matches the file as opened (found, or made just now from the page cache), and the file
        /// wholly in the page cache: send it with `sendfile`.
        case sendable(ChecksummedFile)
        /// A table that matches, but some of the file would have to come from the disk: `sendfile` runs on an event
        /// loop, which must never wait for the disk, so the file is read on the thread pool instead.
        case uncached
        /// No usable table, and none made now: the file is not wholly in the page cache, or larger than
        /// ``FileLibrary/largestChecksummedBeforeSending`` (or not a regular file: ``openForReading(_:)`` says why
        /// not).
        case noTable
    }

    /// Opens `name` to be sent from its ``ChunkChecksums`` table: one job (check, open, `fstat`, read the table,
    /// compare, check the page cache).
    ///
    /// A file of up to ``largestChecksummedBeforeSending`` bytes with no matching table that is wholly in the page
    /// cache gets one here, before anything is sent: it is read once through one bulk-frame buffer and
    /// checksummed, and then sent like any other. Reading it while sending instead holds two chunks and a socket's
    /// backlog per download: 200 first downloads of the same 1 MiB file at once took ferryd to 52–78 MiB, against
    /// about 21 MiB from a table.
    func openWithChecksums(_ name: String) async throws -> ChecksumLookup {
        let path = self.path(name).string
        let tables = self.checksumFolder
        return try await self.threadPool.runIfActive { () -> ChecksumLookup in
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return .noTable }
            let descriptor = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)
            guard descriptor >= 0 else { return .noTable }
            guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                close(descriptor)
                return .noTable
            }
            let identity = FileIdentity(info)
            var checksums: ChunkChecksums? = nil
            if let tables,
                case .contents(let stored, _) = BlockingFileIO.readSmallFile(
                    at: name,
                    in: tables.descriptor,
                    upTo: ChunkChecksums.maximumEncodedLength,
                    followingLinks: false
                ), let table = ChunkChecksums(decoding: stored), table.identity == identity
            {
                checksums = table
            }
            guard Self.isCached(descriptor, size: identity.size) else {
                close(descriptor)
                return checksums == nil ? .noTable : .uncached
            }
            if checksums == nil, identity.size <= Self.largestChecksummedBeforeSending,
                let made = Self.checksum(descriptor, as: identity)
            {
                Self.store(made, as: name, in: tables)
                checksums = made
            }
            guard let checksums else {
                close(descriptor)
                return .noTable
            }
            return .sendable(
                ChecksummedFile(
                    handle: NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: descriptor),
                    descriptor: descriptor,
                    checksums: checksums,
                    linksWhenOpened: UInt64(info.st_nlink)
                )
            )
        }
    }

    /// The largest file checksummed before its first download starts: about 15 ms of reading and checksumming, so
    /// the client is not left waiting for its first byte (or an idle timeout) while a large file is read. Larger
    /// files are checksummed as they are sent, which holds only a transfer's two chunks.
    static let largestChecksummedBeforeSending: UInt64 = 64 << 20

    /// The table of an open file, made by reading it whole; `nil` if it cannot be read, does not fit a table, or
    /// changed while it was read. Blocking.
    private static func checksum(_ descriptor: Int32, as identity: FileIdentity) -> ChunkChecksums? {
        let pieceLength = ChunkChecksums.maximumChunkLength
        guard identity.size > 0, identity.size <= UInt64(ChunkChecksums.maximumChunkCount * pieceLength) else {
            return nil
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: pieceLength, alignment: 16)
        defer { buffer.deallocate() }
        var builder = ChunkChecksumBuilder()
        var offset: UInt64 = 0
        while offset < identity.size {
            let wanted = Int(min(UInt64(pieceLength), identity.size - offset))
            let count = pread(descriptor, buffer.baseAddress, wanted, off_t(offset))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return nil }
            builder.append(length: count, crc32: CRC32.checksum(UnsafeRawBufferPointer(rebasing: buffer[..<count])))
            offset += UInt64(count)
        }
        var after = stat()
        guard fstat(descriptor, &after) == 0, FileIdentity(after) == identity else { return nil }
        return builder.checksums(for: identity)
    }

    /// Whether every page of the file is in the page cache (`mincore` over a mapping that is never touched, so a
    /// file truncated meanwhile cannot fault). Blocking; about a millisecond per GiB.
    private static func isCached(_ descriptor: Int32, size: UInt64) -> Bool {
        let pageSize = max(Int(sysconf(Int32(_SC_PAGESIZE))), 1)
        let window = 64 << 20
        var residency = [UInt8](repeating: 0, count: window / pageSize + 1)
        var offset: UInt64 = 0
        while offset < size {
            let length = Int(min(UInt64(window), size - offset))
            let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, off_t(offset))
            guard let mapping, mapping != UnsafeMutableRawPointer(bitPattern: -1) else { return false }
            let checked = mincore(mapping, length, &residency) == 0
            munmap(mapping, length)
            let pages = (length + pageSize - 1) / pageSize
            guard checked, residency.prefix(pages).allSatisfy({ $0 & 1 == 1 }) else { return false }
            offset += UInt64(length)
        }
        return true
    }

    /// Whether the open file's bytes are still what they were when it was opened (``FileIdentity/sameBytes(as:linksThen:now:)``).
    func isUnchanged(_ file: ReadableFile) async -> Bool {
        guard let identity = file.identity, let now = try? await file.handle.info().platformSpecificStatus else {
            return false
        }
        return identity.sameBytes(as: now, linksThen: file.links, renamedAt: self.renamed.changeTime(of: now))
    }

    /// The CRC-32 of the first `length` bytes of an open file, read a chunk at a time (256 KiB: one frame's worth
    /// of memory, whatever the length). A file shorter than that is a ``FileReadError``.
    func checksum(_ file: ReadableFile, upTo length: UInt64) async throws -> UInt32 {
        var crc: UInt32 = 0
        var position: UInt64 = 0
        while position < length {
            let wanted = min(length - position, UInt64(Self.checksumReadLength))
            let chunk: ByteBuffer
            do {
                chunk = try await file.handle.readChunk(
                    fromAbsoluteOffset: Int64(position),
                    length: .bytes(Int64(wanted))
                )
            } catch {
                throw FileReadError(underlying: error)
            }
            guard chunk.readableBytes > 0 else {
                throw FileReadError(underlying: LibraryError.storage("the file ended before byte \(length)"))
            }
            crc = CRC32.combine(crc, CRC32.checksum(chunk), secondLength: UInt64(chunk.readableBytes))
            position += UInt64(chunk.readableBytes)
        }
        return crc
    }

    static let checksumReadLength = 256 * 1024

    /// The status-change time a rename by this server gave the file `info` describes, if it renamed it.
    func renameTime(of info: stat) -> Int64? {
        self.renamed.changeTime(of: info)
    }

    /// Keeps the table of a file just sent whole by ``openForReading(_:)`` and found unchanged (``isUnchanged(_:)``).
    func keepChecksums(_ collected: ChunkChecksumBuilder, of file: ReadableFile, as name: String) async {
        guard let identity = file.identity, let checksums = collected.checksums(for: identity) else { return }
        let tables = self.checksumFolder
        _ = try? await self.threadPool.runIfActive { Self.store(checksums, as: name, in: tables) }
    }

    /// Writes a table under a random temporary name and renames it into place, so a reader sees a whole table or
    /// none, and two servers sharing the library can write the same table at once (the last rename wins; both
    /// describe the file as it was when checksummed, and a reader checks that against the file). Only within the
    /// pinned folder of tables: a link planted there is never followed. Not flushed: a table lost or torn by a
    /// crash is only a cache miss (its own CRC catches the tear). Blocking.
    private static func store(_ checksums: ChunkChecksums, as name: String, in tables: PinnedFolder?) {
        guard let tables else { return }
        var random = SystemRandomNumberGenerator()
        let temporary = Self.checksumTemporaryPrefix + String(random.next(), radix: 16)
        let descriptor = openat(
            tables.descriptor,
            temporary,
            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
            0o644
        )
        guard descriptor >= 0 else { return }
        let failed = BlockingFileIO.writeAll(descriptor, checksums.encoded()) != nil
        close(descriptor)
        if failed || renameat(tables.descriptor, temporary, tables.descriptor, name) != 0 {
            unlinkat(tables.descriptor, temporary, 0)
        }
    }

    // MARK: - Writing

    /// A new, empty, hidden staging file for an upload, in this server's staging area.
    func createStagingFile() async throws -> StagingFile {
        let options = OpenOptions.Write(
            existingFile: .none,
            newFile: OpenOptions.NewFile(permissions: nil, transactionalCreation: false),
            followSymbolicLinks: false,
            closeOnExec: true
        )
        let staging = self.staging
        do {
            // Twice at most: the area may be removed between looking it up and creating the file in it.
            for attempt in 1...2 {
                let area = try await self.threadPool.runIfActive { try staging.folder() }
                let path = FilePath(area.path(of: Self.newStagingName()))
                do {
                    let handle = try await self.fileSystem.openFile(forWritingAt: path, options: options)
                    return StagingFile(handle: handle, path: path, area: area)
                } catch let error as FileSystemError where error.code == .notFound && attempt == 1 {
                    continue
                }
            }
            throw LibraryError.storage("the staging folder keeps being removed")
        } catch let error as LibraryError {
            throw error
        } catch {
            throw LibraryError.storage("cannot create a staging file: \(error)")
        }
    }

    /// Flushes the staging file to disk and publishes it as `name` (``publishFile(_:as:replacing:)``: without
    /// `overwrite` exactly one of two racing uploads wins; with it the old file is replaced atomically). The folder
    /// is then flushed too, so the new name survives a power cut. The staging file is gone afterwards whether this
    /// succeeds or throws.
    ///
    /// `checksums`, the pieces the upload arrived in, become the file's table (``ChunkChecksums``) once it is
    /// published.
    func commit(
        _ staging: StagingFile,
        as name: String,
        overwrite: Bool,
        checksums: ChunkChecksumBuilder
    ) async throws {
        do {
            try await staging.handle.synchronize()
            try await staging.handle.closeRegardlessOfCancellation()
        } catch {
            await self.discard(staging, alreadyClosed: false)
            throw LibraryError.storage("cannot flush the upload to disk: \(error)")
        }
        let stagingPath = staging.path.string
        let finalPath = self.path(name).string
        let folder = self.folder
        let tables = self.checksumFolder
        let outcome = try? await self.threadPool.runIfActive { () -> (published: Int32, folderFlushed: Int32) in
            var staged = stat()
            let knowsStaged = lstat(stagingPath, &staged) == 0
            let failure = publishFile(stagingPath, as: finalPath, replacing: overwrite)
            guard failure == 0 else { return (failure, 0) }
            let flushed = Self.synchronizeFolder(folder)
            var published = stat()
            // Only if the name still holds this upload: a racing overwrite may have replaced it already.
            if knowsStaged, lstat(finalPath, &published) == 0, published.st_ino == staged.st_ino,
                published.st_dev == staged.st_dev,
                let table = checksums.checksums(for: FileIdentity(published))
            {
                Self.store(table, as: name, in: tables)
            }
            return (0, flushed)
        }
        switch outcome {
        case (0, 0)?:
            return
        case (0, let code)?:
            throw LibraryError.storage(Self.unflushedFolder(name, code))
        case (EEXIST, _)?:
            throw LibraryError.fileExists(name)
        case (let code, _)?:
            throw LibraryError.storage("cannot publish '\(name)': \(String(cString: strerror(code)))")
        case nil:
            unlink(stagingPath)
            throw LibraryError.storage("cannot publish '\(name)': the server is stopping")
        }
    }

    /// Commits small uploads received whole into memory, all in one thread-pool job (a group commit): each is
    /// written to its own staging file, flushed and published as ``commit(_:as:overwrite:)`` does, and the folder
    /// is flushed once for all of them, before any is reported committed. A burst of small uploads then costs one
    /// job and one folder flush instead of several of each per file.
    ///
    /// - Returns: for each upload in order, `nil` if it is committed, or why not.
    func commit(_ uploads: [SmallUpload]) async -> [LibraryError?] {
        let folder = self.folder
        let staging = self.staging
        let destinations = uploads.map { self.path($0.name).string }
        do {
            return try await self.threadPool.runIfActive { () -> [LibraryError?] in
                // Looked up once per group: made again if it was removed while the server ran.
                let area: PinnedFolder
                do throws(LibraryError) {
                    area = try staging.folder()
                } catch {
                    return uploads.map { _ in error }
                }
                let files = zip(uploads, destinations).map { upload, destination in
                    BlockingFileIO.GroupFile(
                        bytes: upload.bytes,
                        temporary: area.path(of: Self.newStagingName()),
                        destination: destination,
                        replacing: upload.overwrite
                    )
                }
                let failures = BlockingFileIO.publishGroup(files)
                let flushed = failures.contains(where: { $0 == nil }) ? Self.synchronizeFolder(folder) : 0
                return zip(uploads, failures).map { upload, failure in
                    switch failure {
                    case nil: flushed == 0 ? nil : .storage(Self.unflushedFolder(upload.name, flushed))
                    case .create(let error)?: .storage("cannot create a staging file: \(error)")
                    case .write(let error)?: .storage("cannot write the upload to disk: \(error)")
                    case .publish(EEXIST)?: .fileExists(upload.name)
                    case .publish(let code)?:
                        .storage("cannot publish '\(upload.name)': \(SystemCallError(code: code))")
                    }
                }
            }
        } catch {
            return uploads.map { .storage("cannot publish '\($0.name)': the server is stopping") }
        }
    }

    // MARK: - Deleting and renaming

    /// Removes `name`, a regular file, and its checksum table; the folder is flushed before this returns. A download
    /// in progress keeps its open descriptor and still sends the whole file.
    func delete(_ name: String) async throws {
        let folder = self.folder
        let tables = self.checksumFolder
        let failure = try await self.threadPool.runIfActive { () -> LibraryError? in
            guard Self.isRegularFile(name, in: folder) else { return .noSuchFile(name) }
            guard unlinkat(folder.descriptor, name, 0) == 0 else {
                return errno == ENOENT
                    ? .noSuchFile(name) : .storage("cannot delete '\(name)': \(Self.describeErrno())")
            }
            if let tables { unlinkat(tables.descriptor, name, 0) }
            let flushed = Self.synchronizeFolder(folder)
            return flushed == 0
                ? nil
                : .storage(
                    "'\(name)' is deleted, but flushing the folder failed: \(String(cString: strerror(flushed)))"
                )
        }
        if let failure { throw failure }
    }

    /// Gives the regular file `from` the name `to` in one atomic step: without `overwrite` only if `to` is free
    /// (exactly one of a rename and an upload racing for it wins), with it replacing a file named `to` (never a
    /// folder or a link). The folder is flushed before this returns.
    func rename(_ from: String, to: String, overwrite: Bool) async throws {
        let folder = self.folder
        let tables = self.checksumFolder
        let renamed = self.renamed
        let failure = try await self.threadPool.runIfActive { () -> LibraryError? in
            guard Self.isRegularFile(from, in: folder) else { return .noSuchFile(from) }
            // Byte for byte: two spellings of one name that Unicode deems equal are two names here.
            let sameName = from.utf8.elementsEqual(to.utf8)
            var existing = stat()
            if fstatat(folder.descriptor, to, &existing, AT_SYMLINK_NOFOLLOW) == 0 {
                guard (existing.st_mode & S_IFMT) == S_IFREG else { return .notAFile(to) }
                guard overwrite || sameName else { return .fileExists(to) }
            }
            let code = Self.renameAtomically(from, to: to, in: folder.descriptor, replacing: overwrite || sameName)
            switch code {
            case 0: break
            case EEXIST, ENOTEMPTY: return .fileExists(to)
            case ENOENT: return .noSuchFile(from)
            default: return .storage("cannot rename '\(from)': \(String(cString: strerror(code)))")
            }
            if let tables, !sameName {
                // A renamed file's status-change time moves, so its table would no longer match anyway.
                unlinkat(tables.descriptor, from, 0)
                unlinkat(tables.descriptor, to, 0)
            }
            var moved = stat()
            if fstatat(folder.descriptor, to, &moved, AT_SYMLINK_NOFOLLOW) == 0 {
                renamed.note(moved)
            }
            let flushed = Self.synchronizeFolder(folder)
            return flushed == 0
                ? nil
                : .storage("'\(to)' is renamed, but flushing the folder failed: \(String(cString: strerror(flushed)))")
        }
        if let failure { throw failure }
    }

    /// `renameat`, or without `replacing` `renameat2(RENAME_NOREPLACE)` (`link` then `unlink` where the file system
    /// lacks it). Unlike ``publishFile(_:in:as:in:replacing:)``, a refused rename leaves the source in place.
    /// Blocking; returns 0 or the `errno`.
    private static func renameAtomically(_ from: String, to: String, in folder: Int32, replacing: Bool) -> Int32 {
        if replacing {
            return renameat(folder, from, folder, to) == 0 ? 0 : errno
        }
        if ferry_rename_no_replace(folder, from, folder, to) == 0 {
            return 0
        }
        let refusal = errno
        guard refusal == EINVAL || refusal == ENOSYS || refusal == EPERM else { return refusal }
        // Without RENAME_NOREPLACE: move the file to a hidden name of its own first, so that nothing another
        // request puts under `from` meanwhile can be unlinked by mistake, then link the new name (which refuses a
        // taken one atomically) and drop the hidden one; on failure the file goes back under `from`.
        var random = SystemRandomNumberGenerator()
        let hidden = ".ferry-renaming-\(String(random.next(), radix: 16))"
        guard renameat(folder, from, folder, hidden) == 0 else { return errno }
        guard linkat(folder, hidden, folder, to, 0) == 0 else {
            let failure = errno
            renameat(folder, hidden, folder, from)
            return failure
        }
        unlinkat(folder, hidden, 0)
        return 0
    }

    /// Whether `name` in the folder is a regular file (links are not followed). Blocking.
    private static func isRegularFile(_ name: String, in folder: PinnedFolder) -> Bool {
        var info = stat()
        return fstatat(folder.descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// Closes and removes a staging file whose upload failed. Never throws: it runs on failure paths.
    func discard(_ staging: StagingFile, alreadyClosed: Bool = false) async {
        if !alreadyClosed {
            try? await staging.handle.closeRegardlessOfCancellation()
        }
        let path = staging.path.string
        let removed = try? await self.threadPool.runIfActive { unlink(path) }
        if removed == nil {
            // The pool is shutting down or the task was cancelled: one short syscall inline is the lesser evil
            // compared with leaving a staging file behind.
            unlink(path)
        }
    }

    /// Removes staging files left in the library folder by versions before staging areas, and checksum tables whose
    /// file is gone or whose writing was abandoned. Runs at start-up, before any connection is accepted. (Staging
    /// areas left by servers that are gone are removed by ``StagingArea``.)
    private func removeLeftovers() async throws {
        let folder = self.folder
        let tables = self.checksumFolder
        let prefix = Array(Self.stagingPrefix.utf8)
        try await self.threadPool.runIfActive {
            // An unreadable library fails the start.
            // An older version of the server may be writing them still (an overlapping restart to upgrade).
            try Self.forEachEntry(in: folder.path) { descriptor, name, type in
                let text = String(decoding: name, as: UTF8.self)
                guard name.starts(with: prefix), type != DT_DIR, StagingArea.isStill(text, in: descriptor) else {
                    return
                }
                _ = unlinkat(descriptor, text, 0)
            }
            guard let tables else { return }
            let now = time(nil)
            try? Self.forEachEntry(in: tables.path) { descriptor, name, type in
                guard type != DT_DIR else { return }
                String(decoding: name, as: UTF8.self).withCString { name in
                    var info = stat()
                    if name.pointee == CChar(UInt8(ascii: ".")) {
                        // A table being written (tables of files have no dot-names): another server sharing the
                        // library may be writing it now.
                        guard fstatat(descriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0,
                            Int(now) - Int(info.st_mtim.tv_sec) > Self.abandonedTableAge
                        else { return }
                        unlinkat(descriptor, name, 0)
                    } else if fstatat(folder.descriptor, name, &info, AT_SYMLINK_NOFOLLOW) != 0 {
                        unlinkat(descriptor, name, 0)
                    }
                }
            }
        }
    }

    // MARK: - Helpers

    /// Calls `body` with the folder's descriptor and the raw bytes of each entry's name. Blocking: call it on the
    /// thread pool.
    static func forEachEntry(
        in root: String,
        _ body: (_ descriptor: Int32, _ name: [UInt8], _ type: Int32) throws -> Void
    ) throws {
        guard let directory = opendir(root) else {
            throw LibraryError.storage("cannot read the library folder: \(Self.describeErrno())")
        }
        defer { closedir(directory) }
        let descriptor = dirfd(directory)
        while let record = readdir(directory) {
            let name = withUnsafeBytes(of: record.pointee.d_name) { raw in Array(raw.prefix(while: { $0 != 0 })) }
            try body(descriptor, name, Int32(record.pointee.d_type))
        }
    }

    /// Flushes the folder itself, so a name just published survives a power cut. Blocking.
    ///
    /// - Returns: 0, or the `errno` of the `fsync` that failed.
    private static func synchronizeFolder(_ folder: PinnedFolder) -> Int32 {
        fsync(folder.descriptor) == 0 ? 0 : errno
    }

    /// Why an upload that is in the library is not reported stored: its new name may not survive a power cut, so
    /// the client must not take it as safe (and drop its own copy).
    private static func unflushedFolder(_ name: String, _ code: Int32) -> String {
        "'\(name)' is in the library, but flushing the library folder failed (\(String(cString: strerror(code)))): "
            + "it may not survive a power cut"
    }

    static func nanoseconds(seconds: Int64, nanoseconds: Int64) -> Int64 {
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(nanoseconds).overflow ? .max : scaled + nanoseconds
    }

    private static func describeErrno() -> String {
        String(cString: strerror(errno))
    }
}

/// An open file being sent, with what FILE_INFO announces about it.
struct ReadableFile: Sendable {
    let handle: ReadFileHandle
    let size: UInt64
    let modified: Int64
    /// What it was when opened, for ``FileLibrary/keepChecksums(_:of:as:)``.
    let identity: FileIdentity?
    /// Its number of names when opened.
    let links: UInt64
}

/// A file opened with a table that matches it, to be sent with `sendfile`. The handle is the caller's to close,
/// once nothing still queued on the channel refers to it.
struct ChecksummedFile: Sendable {
    let handle: NIOFileHandle
    /// The handle's descriptor, for ``currentSize()`` while NIO holds the handle to send from it.
    let descriptor: Int32
    let checksums: ChunkChecksums
    /// The file's number of names when it was opened.
    let linksWhenOpened: UInt64

    /// The file's size now (`fstat`), or -1 if it cannot be had. Valid until the handle is closed.
    @Sendable func currentSize() -> Int64 {
        var info = stat()
        return fstat(self.descriptor, &info) == 0 ? Int64(info.st_size) : -1
    }

    /// Whether the file's bytes are still the ones its table describes (see ``FileLibrary/isUnchanged(_:)``).
    func isUnchanged(in library: FileLibrary) -> Bool {
        var info = stat()
        return fstat(self.descriptor, &info) == 0
            && self.checksums.identity.sameBytes(
                as: info,
                linksThen: self.linksWhenOpened,
                renamedAt: library.renameTime(of: info)
            )
    }
}

extension Array {
    /// Consecutive slices of at most `size` elements.
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: self.count, by: Swift.max(size, 1)).map { self[$0..<Swift.min($0 + size, self.count)] }
    }
}

/// A small upload received whole and verified, for ``FileLibrary/commit(_:)``.
struct SmallUpload: Sendable {
    let bytes: ByteBuffer
    let name: String
    let overwrite: Bool
}

/// A small file read whole (``FileLibrary/readWhole(_:upTo:)``).
struct WholeFile: Sendable {
    let bytes: ByteBuffer
    let modified: Int64
}

/// An upload in progress: the open staging file and where it lives.
struct StagingFile: Sendable {
    let handle: WriteFileHandle
    /// A path through the descriptor of `area`, which this keeps open.
    let path: FilePath
    let area: PinnedFolder
}

/// The files a server renamed lately and the status-change time each rename gave them: the last
/// ``RenamedFiles/capacity`` renames, enough for any download they could overlap.
final class RenamedFiles: Sendable {
    private struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    private let state = Mutex<(times: [Key: Int64], order: [Key])>(([:], []))
    static let capacity = 4096

    func note(_ info: stat) {
        let key = Key(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        let time = FileIdentity(info).changed
        self.state.withLock { state in
            if state.times.updateValue(time, forKey: key) == nil {
                state.order.append(key)
                if state.order.count > Self.capacity {
                    state.times.removeValue(forKey: state.order.removeFirst())
                }
            }
        }
    }

    func changeTime(of info: stat) -> Int64? {
        let key = Key(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        return self.state.withLock { $0.times[key] }
    }
}
