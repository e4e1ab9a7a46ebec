import FerryProtocol
import FerryTransport
import NIOCore
import NIOPosix
import _NIOFileSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A local file about to be uploaded: read whole when it fits one DATA frame, or open for streaming.
enum LocalSource {
    /// The whole file, read in one thread-pool job (open, check, read, close).
    case whole(ByteBuffer)
    /// A larger file, open for reading chunk by chunk.
    case stream(ReadFileHandle, size: UInt64)

    /// What a group read found for one file.
    enum Peek: Sendable {
        case whole(ByteBuffer)
        /// Larger than one DATA frame: opened for streaming when its turn comes.
        case large(path: String)
        case failed(FerryClientError)

        /// The source, opening a large file now.
        func opened() async throws -> LocalSource {
            switch self {
            case .whole(let bytes): return .whole(bytes)
            case .large(let path): return try await LocalSource.openForStreaming(path)
            case .failed(let error): throw error
            }
        }
    }

    /// Reads the small files among `paths` whole, in one thread-pool job, stopping once `budget` bytes are
    /// read: a batch of small uploads costs one job, and memory stays bounded. Returns at least one entry, in
    /// order, for a prefix of `paths`.
    static func read(_ paths: [String], wholeUpTo limit: Int, budget: Int) async -> [Peek] {
        do {
            return try await NIOThreadPool.singleton.runIfActive {
                var peeks: [Peek] = []
                var total = 0
                for path in paths where total < budget {
                    do {
                        if let bytes = try Self.readWhole(path, upTo: limit) {
                            total += bytes.readableBytes
                            peeks.append(.whole(bytes))
                        } else {
                            peeks.append(.large(path: path))
                        }
                    } catch let error as FerryClientError {
                        peeks.append(.failed(error))
                    }
                }
                return peeks
            }
        } catch {
            return [.failed(.localFile("cannot read '\(paths.first ?? "")': \(FerryConnection.describe(error))"))]
        }
    }

    /// - Throws: ``FerryClientError/localFile(_:)`` for a missing, unreadable or irregular file.
    static func openForStreaming(_ path: String) async throws -> LocalSource {
        do {
            let handle = try await FileSystem.shared.openFile(
                forReadingAt: FilePath(path),
                options: .init(closeOnExec: true)
            )
            let info: _NIOFileSystem.FileInfo
            do {
                info = try await handle.info()
            } catch {
                try? await handle.closeRegardlessOfCancellation()
                throw error
            }
            guard info.type == .regular else {
                try? await handle.closeRegardlessOfCancellation()
                throw FerryClientError.localFile("'\(path)' is not a regular file")
            }
            return .stream(handle, size: UInt64(max(info.size, 0)))
        } catch let error as FerryClientError {
            throw error
        } catch {
            throw FerryClientError.localFile("cannot read '\(path)': \(FerryConnection.describe(error))")
        }
    }

    /// The file's bytes if it is a regular file of at most `limit` bytes; `nil` if it is larger. Blocking.
    private static func readWhole(_ path: String, upTo limit: Int) throws -> ByteBuffer? {
        // Checked before opening, so that opening never blocks on a FIFO.
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FerryClientError.localFile("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw FerryClientError.localFile("'\(path)' is not a regular file")
        }
        guard info.st_size <= limit else { return nil }
        let descriptor = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw FerryClientError.localFile("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size <= limit else {
            return nil
        }
        switch BlockingFileIO.read(descriptor, upTo: Int(info.st_size)) {
        case .success(let bytes):
            return bytes
        case .failure(let error):
            throw FerryClientError.localFile("reading '\(path)' failed: \(error)")
        }
    }
}
