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

    /// Writes all of `bytes` to an open file, then flushes them to stable storage.
    public static func writeAndSynchronize(_ descriptor: Int32, _ bytes: ByteBuffer) -> SystemCallError? {
        let failure = bytes.withUnsafeReadableBytes { source -> Int32 in
            var written = 0
            while written < source.count {
                let count = write(descriptor, source.baseAddress.map { $0 + written }, source.count - written)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return count == 0 ? EIO : errno }
                written += count
            }
            return fsync(descriptor) == 0 ? 0 : errno
        }
        return failure == 0 ? nil : SystemCallError(code: failure)
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
