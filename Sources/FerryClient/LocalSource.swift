import FerryProtocol
import FerryTransport
import NIOCore
import NIOPosix
import _NIOFileSystem

/// A local file about to be uploaded: read whole when it fits one DATA frame, or open for streaming.
enum LocalSource {
    /// The whole file, read in one thread-pool job (open, check, read, close).
    case whole(ByteBuffer)
    /// A larger file, open for reading chunk by chunk, and what it was when opened.
    case stream(ReadFileHandle, opened: _NIOFileSystem.FileInfo)

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
                var folders = OpenFolders()
                for path in paths where total < budget {
                    let (folder, name) = folders.locate(path)
                    switch BlockingFileIO.readSmallFile(at: name, in: folder, upTo: limit, followingLinks: true) {
                    case .contents(let bytes, _):
                        total += bytes.readableBytes
                        peeks.append(.whole(bytes))
                    case .larger:
                        peeks.append(.large(path: path))
                    case .notRegular:
                        peeks.append(.failed(.localFile("'\(path)' is not a regular file")))
                    case .cannotOpen(let error):
                        peeks.append(.failed(.localFile("cannot read '\(path)': \(error)")))
                    case .cannotRead(let error):
                        peeks.append(.failed(.localFile("reading '\(path)' failed: \(error)")))
                    case .changed:
                        peeks.append(.failed(.localFile("'\(path)' changed while being read; not uploaded")))
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
            return .stream(handle, opened: info)
        } catch let error as FerryClientError {
            throw error
        } catch {
            throw FerryClientError.localFile("cannot read '\(path)': \(FerryConnection.describe(error))")
        }
    }
}
