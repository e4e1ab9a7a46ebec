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

    /// What ``readSmallFile(at:upTo:followingLinks:)`` found.
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
    }

    /// Reads the file at `path` whole if it is a regular file of at most `limit` bytes: the small-file paths' one
    /// job for open, check, read and close.
    ///
    /// The kind of file is checked before opening, so that opening never blocks on a FIFO or touches a device,
    /// and again on the open descriptor, in case the path changed in between. Memory is bounded by `limit`.
    public static func readSmallFile(at path: String, upTo limit: Int, followingLinks: Bool) -> SmallFileRead {
        var info = stat()
        guard (followingLinks ? stat(path, &info) : lstat(path, &info)) == 0 else {
            return .cannotOpen(SystemCallError(code: errno))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .notRegular }
        guard info.st_size <= limit else { return .larger }
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (followingLinks ? 0 : O_NOFOLLOW))
        guard descriptor >= 0 else { return .cannotOpen(SystemCallError(code: errno)) }
        defer { close(descriptor) }
        guard fstat(descriptor, &info) == 0 else { return .cannotOpen(SystemCallError(code: errno)) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .notRegular }
        guard info.st_size <= limit else { return .larger }
        switch self.read(descriptor, upTo: Int(info.st_size)) {
        case .success(let bytes):
            return .contents(bytes, modified: (Int64(info.st_mtim.tv_sec), Int64(info.st_mtim.tv_nsec)))
        case .failure(let error):
            return .cannotRead(error)
        }
    }

    /// Writes all of `bytes` to an open file.
    public static func writeAll(_ descriptor: Int32, _ bytes: ByteBuffer) -> SystemCallError? {
        bytes.withUnsafeReadableBytes { self.writeAll(descriptor, $0) }
    }

    /// Writes all of `bytes` to an open file (or a terminal, or a pipe), retrying after a signal.
    public static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> SystemCallError? {
        var written = 0
        while written < bytes.count {
            let count = write(descriptor, bytes.baseAddress.map { $0 + written }, bytes.count - written)
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

        public init(bytes: ByteBuffer, temporary: String, destination: String, replacing: Bool) {
            self.bytes = bytes
            self.temporary = temporary
            self.destination = destination
            self.replacing = replacing
        }
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
    /// - Returns: for each file in order, `nil` once it is published, or why it is not.
    public static func publishGroup(_ files: [GroupFile]) -> [GroupFailure?] {
        var outcomes = [GroupFailure?](repeating: nil, count: files.count)
        var descriptors = [Int32](repeating: -1, count: files.count)
        for (index, file) in files.enumerated() {
            var existing = stat()
            if !file.replacing, lstat(file.destination, &existing) == 0 {
                // Taken already: refused without writing it (publishing would refuse it anyway, atomically).
                outcomes[index] = .publish(EEXIST)
                continue
            }
            let descriptor = open(file.temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                outcomes[index] = .create(SystemCallError(code: errno))
                continue
            }
            descriptors[index] = descriptor
            if let failure = self.writeAll(descriptor, file.bytes) {
                outcomes[index] = .write(failure)
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
        for (index, file) in files.enumerated() where descriptors[index] >= 0 {
            if outcomes[index] != nil {
                unlink(file.temporary)
                continue
            }
            let failure = publishFile(file.temporary, as: file.destination, replacing: file.replacing)
            if failure != 0 {
                outcomes[index] = .publish(failure)
            }
        }
        return outcomes
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
