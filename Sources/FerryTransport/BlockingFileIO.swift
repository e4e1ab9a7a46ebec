import CFileCalls
public import FerryProtocol
public import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The system calls of the small-file paths, which do all of a file's work in one thread-pool job instead of one
/// job per call. Blocking: call them on a thread pool.
public enum BlockingFileIO {
    /// Reads up to `size` bytes from the start of an open file: fewer if the file is shorter by now.
    public static func read(_ descriptor: Int32, upTo size: Int) -> Result<ByteBuffer, SystemCallError> {
        var bytes = ByteBufferAllocator().buffer(capacity: size)
        while bytes.readableBytes < size {
            let offset = bytes.readableBytes
            var failure: Int32 = 0
            let count = bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: size - offset) { target in
                let count = pread(descriptor, target.baseAddress, size - offset, off_t(offset))
                failure = count < 0 ? errno : 0
                return max(count, 0)
            }
            if failure == EINTR { continue }
            if failure != 0 { return .failure(SystemCallError(code: failure)) }
            if count == 0 { break }  // It shrank: what it holds now.
        }
        return .success(bytes)
    }

    /// What ``readSmallFile(at:in:upTo:followingLinks:)`` found.
    public enum SmallFileRead: Sendable {
        /// The whole file, and when it was last modified.
        case contents(ByteBuffer, modified: (seconds: Int64, nanoseconds: Int64))
        /// A regular file of more than the limit: to be streamed instead.
        case larger
        /// Something that is not a regular file (a folder, a FIFO, a device; with `followingLinks: false`, a link).
        case notRegular
        /// Looking at or opening the file failed (`ENOENT`, `ELOOP`, `EACCES`…).
        case cannotOpen(SystemCallError)
        /// Reading it failed.
        case cannotRead(SystemCallError)
        /// It was written to while it was read (its size or times moved): what was read may mix two versions.
        case changed
    }

    /// Reads the file at `path` whole if it is a regular file of at most `limit` bytes: the small-file paths' one
    /// job for open, check, read and close.
    ///
    /// The kind of file is checked before opening, so that opening never blocks on a FIFO or touches a device,
    /// and again on the open descriptor, in case the path changed in between. Memory is bounded by `limit`.
    ///
    /// A relative `path` is looked up in `folder`, an open folder (see ``OpenFolders``), if there is one.
    public static func readSmallFile(
        at path: String,
        in folder: Int32? = nil,
        upTo limit: Int,
        followingLinks: Bool
    ) -> SmallFileRead {
        var info = stat()
        let folder = folder ?? AT_FDCWD
        guard fstatat(folder, path, &info, followingLinks ? 0 : AT_SYMLINK_NOFOLLOW) == 0 else {
            return .cannotOpen(SystemCallError(code: errno))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .notRegular }
        guard info.st_size <= limit else { return .larger }
        let descriptor = openat(folder, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (followingLinks ? 0 : O_NOFOLLOW))
        guard descriptor >= 0 else { return .cannotOpen(SystemCallError(code: errno)) }
        defer { close(descriptor) }
        guard fstat(descriptor, &info) == 0 else { return .cannotOpen(SystemCallError(code: errno)) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .notRegular }
        guard info.st_size <= limit else { return .larger }
        switch self.read(descriptor, upTo: Int(info.st_size)) {
        case .success(let bytes):
            var after = stat()
            guard fstat(descriptor, &after) == 0, after.st_size == info.st_size, bytes.readableBytes == info.st_size,
                after.st_mtim.tv_sec == info.st_mtim.tv_sec, after.st_mtim.tv_nsec == info.st_mtim.tv_nsec
            else { return .changed }
            return .contents(bytes, modified: (Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec)))
        case .failure(let error):
            return .cannotRead(error)
        }
    }

    /// How often a large file being written asks the kernel to start writing it to disk.
    ///
    /// Left to itself the kernel writes a transfer's pages back only once enough memory is dirty, so the `fsync`
    /// before a file is published waited for most of the file: 0.55 s after a 1 GiB download to this machine's disk.
    /// Handed over every few MiB, the disk works while the network does, and that `fsync` took 0.01 s.
    public static let writebackInterval: Int64 = 8 << 20

    /// Writes all of `bytes` at `offset` of an open file, then hands every whole ``writebackInterval`` this write
    /// completed to the disk (`sync_file_range`: it does not wait for the data to reach the disk, though it may wait
    /// for room in the disk's queue; a no-op on tmpfs).
    public static func writeHandingToDisk(
        _ descriptor: Int32,
        _ bytes: ByteBuffer,
        at offset: Int64
    ) -> SystemCallError? {
        if let failure = bytes.withUnsafeReadableBytes({ self.writeAll(descriptor, $0, at: offset) }) {
            return failure
        }
        let interval = Self.writebackInterval
        let from = offset / interval * interval
        let to = (offset + Int64(bytes.readableBytes)) / interval * interval
        if to > from {
            // Only a hint: a failure to start now shows in the `fsync` that publishing waits for.
            _ = ferry_start_writeback(descriptor, from, to - from)
        }
        return nil
    }

    /// Writes a DATA chunk's pieces one after the other from `offset` (see ``writeHandingToDisk(_:_:at:)``).
    public static func writeHandingToDisk(
        _ descriptor: Int32,
        _ chunk: DataChunk,
        at offset: Int64
    ) -> SystemCallError? {
        var at = offset
        do throws(SystemCallError) {
            try chunk.forEachPiece { (piece) throws(SystemCallError) in
                if let failure = Self.writeHandingToDisk(descriptor, piece, at: at) {
                    throw failure
                }
                at += Int64(piece.readableBytes)
            }
        } catch {
            return error
        }
        return nil
    }

    /// Writes `bytes` as the file at `path`, whole or not at all: into a temporary file of its own beside it (a
    /// random name, created exclusively, never through a link), flushed, then given its name by
    /// ``publishFile(_:as:replacing:)``, and the folder flushed so that the name survives a crash. Blocking.
    ///
    /// - Parameters:
    ///   - mode: the file's permissions, less the umask's; with `exactMode`, exactly these (a secret's 0600).
    ///   - replacing: whether an existing file of that name is replaced; without it, one is left as it is and the
    ///     result is `EEXIST`.
    ///   - flushing: `false` skips both flushes, for a file whose loss in a crash costs only a convenience: it is
    ///     still whole or absent, never torn, to a reader while the system runs.
    /// - Returns: `nil`, or what stopped it (the temporary file is gone either way).
    ///
    /// The temporary name is `path` and at most ``writeWholeSuffixLength`` more bytes.
    public static func writeWhole(
        _ bytes: ByteBuffer,
        to path: String,
        mode: UInt32,
        exactMode: Bool = false,
        replacing: Bool = true,
        flushing: Bool = true
    ) -> SystemCallError? {
        var random = SystemRandomNumberGenerator()
        let temporary = "\(path)\(Self.writeWholeSuffix)\(String(random.next(), radix: 16))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode_t(mode))
        guard descriptor >= 0 else { return SystemCallError(code: errno) }
        var failure = self.writeAll(descriptor, bytes)
        if failure == nil, exactMode && fchmod(descriptor, mode_t(mode)) != 0 || flushing && fsync(descriptor) != 0 {
            failure = SystemCallError(code: errno)
        }
        close(descriptor)
        if let failure {
            unlink(temporary)
            return failure
        }
        let published = publishFile(temporary, as: path, replacing: replacing)
        guard published == 0 else { return SystemCallError(code: published) }
        guard flushing else { return nil }
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let directory = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        return nil
    }

    private static let writeWholeSuffix = ".tmp-"

    /// How much longer than its file's name the temporary name of ``writeWhole(_:to:mode:exactMode:replacing:flushing:)`` may
    /// be: its suffix and 16 hex digits.
    public static let writeWholeSuffixLength = Self.writeWholeSuffix.utf8.count + 16

    /// The CRC-32 of the first `length` bytes of an open file, read a MiB at a time; `nil` if they cannot all be read.
    public static func checksum(_ descriptor: Int32, length: UInt64) -> UInt32? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var crc = CRC32()
        var position: UInt64 = 0
        while position < length {
            let wanted = Int(min(UInt64(buffer.count), length - position))
            let count = pread(descriptor, buffer.baseAddress, wanted, off_t(position))
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return nil }
            crc.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            position += UInt64(count)
        }
        return crc.value
    }

    /// Creates every folder of `path` that is missing, with `mode`, following links on the way (the user named the
    /// path). Returns the folder that could not be made and why, or `nil`.
    public static func makeFolders(_ path: String, mode: UInt32) -> (folder: String, error: SystemCallError)? {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if mkdir(prefix, mode_t(mode)) != 0, errno != EEXIST {
                return (prefix, SystemCallError(code: errno))
            }
            prefix += "/"
        }
        return nil
    }

    /// Writes all of `bytes` to an open file.
    public static func writeAll(_ descriptor: Int32, _ bytes: ByteBuffer) -> SystemCallError? {
        bytes.withUnsafeReadableBytes { self.writeAll(descriptor, $0) }
    }

    /// Writes all of `bytes` to an open file (or a terminal, or a pipe), retrying after a signal: at the file's
    /// position, or at `offset` if given (`pwrite`).
    public static func writeAll(
        _ descriptor: Int32,
        _ bytes: UnsafeRawBufferPointer,
        at offset: Int64? = nil
    ) -> SystemCallError? {
        var written = 0
        while written < bytes.count {
            let start = bytes.baseAddress.map { $0 + written }
            let count =
                if let offset {
                    pwrite(descriptor, start, bytes.count - written, off_t(offset + Int64(written)))
                } else {
                    write(descriptor, start, bytes.count - written)
                }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return SystemCallError(code: count == 0 ? EIO : errno) }
            written += count
        }
        return nil
    }

    /// A small file to be written whole and published: see ``publishGroup(_:)``.
    public struct GroupFile: Sendable {
        public var bytes: ByteBuffer
        /// A new name beside `destination`; it never exists afterwards.
        public var temporary: String
        public var destination: String
        public var replacing: Bool
        /// A modification time to give the file (nanoseconds since 1970) before it is published; `nil` for now.
        public var modified: Int64?

        public init(bytes: ByteBuffer, temporary: String, destination: String, replacing: Bool, modified: Int64? = nil)
        {
            self.bytes = bytes
            self.temporary = temporary
            self.destination = destination
            self.replacing = replacing
            self.modified = modified
        }
    }

    /// `UTIME_OMIT` (`(1 << 30) - 2` in Linux's `<sys/stat.h>`, a macro Swift does not import): leave this time as is.
    private static let leaveTimeAlone = (1 << 30) - 2

    /// Gives an open file the modification time `modified` (nanoseconds since 1970), leaving its access time alone.
    /// Returns 0 or the `errno`.
    public static func setModificationTime(_ descriptor: Int32, _ modified: Int64) -> Int32 {
        var times = [
            timespec(tv_sec: 0, tv_nsec: Self.leaveTimeAlone),
            timespec(tv_sec: Int(modified / 1_000_000_000), tv_nsec: Int(modified % 1_000_000_000)),
        ]
        if times[1].tv_nsec < 0 {
            times[1].tv_sec -= 1
            times[1].tv_nsec += 1_000_000_000
        }
        return futimens(descriptor, &times) == 0 ? 0 : errno
    }

    /// Why one file of a group was not published.
    public enum GroupFailure: Error, Sendable {
        /// Its temporary file could not be created.
        case create(SystemCallError)
        /// Writing it or flushing it to stable storage failed.
        case write(SystemCallError)
        /// ``publishFile(_:as:replacing:)`` failed with this `errno` (`EEXIST`: the name was taken).
        case publish(Int32)
    }

    /// Writes each file to its temporary name, then flushes all of them, then publishes each one
    /// (``publishFile(_:as:replacing:)``): a file is published only once it is on stable storage.
    ///
    /// Writing them all before flushing any lets a journaling file system commit them together: the first
    /// `fsync` carries the others' data, so a group costs about one flush to the disk instead of one per file.
    /// Each temporary file is created inside `gate`, which runs the creation it is given (returning its result) or
    /// refuses it (returning -1 with `errno` set): a process that is being stopped refuses, and holds a lock around
    /// creations so that none is under way while it cleans up.
    ///
    /// - Returns: for each file in order, `nil` once it is published, or why it is not.
    public static func publishGroup(
        _ files: [GroupFile],
        gate: (_ create: () -> Int32) -> Int32 = { $0() }
    ) -> [GroupFailure?] {
        var folders = OpenFolders()
        var outcomes = [GroupFailure?](repeating: nil, count: files.count)
        var descriptors = [Int32](repeating: -1, count: files.count)
        let temporaries = files.map { folders.locate($0.temporary) }
        let destinations = files.map { folders.locate($0.destination) }
        for (index, file) in files.enumerated() {
            let (temporaryFolder, temporary) = temporaries[index]
            let (destinationFolder, destination) = destinations[index]
            var existing = stat()
            if !file.replacing, fstatat(destinationFolder, destination, &existing, AT_SYMLINK_NOFOLLOW) == 0 {
                // Taken already: refused without writing it (publishing would refuse it anyway, atomically).
                outcomes[index] = .publish(EEXIST)
                continue
            }
            let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
            let descriptor = gate { openat(temporaryFolder, temporary, flags, 0o644) }
            guard descriptor >= 0 else {
                outcomes[index] = .create(SystemCallError(code: errno))
                continue
            }
            descriptors[index] = descriptor
            if let failure = self.writeAll(descriptor, file.bytes) {
                outcomes[index] = .write(failure)
            } else if let modified = file.modified, case let code = Self.setModificationTime(descriptor, modified),
                code != 0
            {
                outcomes[index] = .write(SystemCallError(code: code))
            }
        }
        for (index, descriptor) in descriptors.enumerated() where descriptor >= 0 {
            if outcomes[index] == nil, fsync(descriptor) != 0 {
                outcomes[index] = .write(SystemCallError(code: errno))
            }
            if close(descriptor) != 0, outcomes[index] == nil {
                outcomes[index] = .write(SystemCallError(code: errno))
            }
        }
        for index in files.indices where descriptors[index] >= 0 {
            let (temporaryFolder, temporary) = temporaries[index]
            if outcomes[index] != nil {
                unlinkat(temporaryFolder, temporary, 0)
                continue
            }
            let (destinationFolder, destination) = destinations[index]
            let failure = publishFile(
                temporary,
                in: temporaryFolder,
                as: destination,
                in: destinationFolder,
                replacing: files[index].replacing
            )
            if failure != 0 {
                outcomes[index] = .publish(failure)
            }
        }
        return outcomes
    }
}

/// The folders of a group's files, each opened once, so that every call of the group looks up one name in an open
/// folder instead of walking the whole path again (for 4 KiB uploads the walks were about a tenth of the server's
/// CPU). Closed when it goes out of scope. Blocking: use it on a thread pool.
public struct OpenFolders: ~Copyable {
    private var descriptors: [String: Int32] = [:]

    public init() {}

    /// The open folder that holds `path` and the name within it; `AT_FDCWD` and `path` itself for a path without a
    /// folder, or whose folder cannot be opened (the call on it then behaves as it would have).
    ///
    /// The path is split at its last `/` byte, never at a character: a name may begin with a combining mark, which
    /// `String` would take as one character with the `/` before it (and drop from the name).
    ///
    /// A folder is resolved once, when the group first uses it: if it is renamed while the group runs, the rest of
    /// the group follows it, where whole paths would have failed.
    public mutating func locate(_ path: String) -> (folder: Int32, name: String) {
        let bytes = path.utf8
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return (AT_FDCWD, path) }
        let name = String(decoding: bytes[bytes.index(after: slash)...], as: UTF8.self)
        guard !name.isEmpty else { return (AT_FDCWD, path) }
        let folderPath = slash == bytes.startIndex ? "/" : String(decoding: bytes[..<slash], as: UTF8.self)
        if let descriptor = self.descriptors[folderPath] {
            return (descriptor, name)
        }
        // Only for looking names up in: search permission is enough, as for a whole path.
        let descriptor = ferry_open_folder(folderPath)
        guard descriptor >= 0 else { return (AT_FDCWD, path) }
        self.descriptors[folderPath] = descriptor
        return (descriptor, name)
    }

    deinit {
        for descriptor in self.descriptors.values {
            close(descriptor)
        }
    }
}

/// A failed system call's `errno`, described as `strerror` does.
public struct SystemCallError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: Int32

    public init(code: Int32) {
        self.code = code
    }

    public var description: String {
        String(cString: strerror(self.code))
    }
}
