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

/// A download in progress: a hidden temporary file beside its destination, published by rename only after the
/// transfer has been verified, so the destination never holds a partial or unverified file.
final class LocalDownload {
    private let handle: WriteFileHandle
    private let path: FilePath
    private var offset: Int64 = 0
    private var open = true

    static func create(beside target: FilePath) async throws -> LocalDownload {
        var random = SystemRandomNumberGenerator()
        let directory = target.removingLastComponent()
        let base = target.lastComponent?.string ?? "download"
        let path = (directory.isEmpty ? FilePath(".") : directory)
            .appending(".\(base).ferry-part-\(String(random.next() & 0xFFFF_FFFF, radix: 16))")
        do {
            let handle = try await FileSystem.shared.openFile(
                forWritingAt: path,
                options: OpenOptions.Write(
                    existingFile: .none,
                    newFile: OpenOptions.NewFile(permissions: nil, transactionalCreation: false),
                    followSymbolicLinks: false,
                    closeOnExec: true
                )
            )
            return LocalDownload(handle: handle, path: path)
        } catch {
            throw FerryClientError.localFile(
                "cannot create a file beside '\(target)': \(FerryConnection.describe(error))"
            )
        }
    }

    private init(handle: WriteFileHandle, path: FilePath) {
        self.handle = handle
        self.path = path
    }

    func write(_ bytes: ByteBuffer) async throws {
        do {
            try await self.handle.write(contentsOf: bytes, toAbsoluteOffset: self.offset)
        } catch {
            throw FerryClientError.localFile("writing '\(self.path)' failed: \(FerryConnection.describe(error))")
        }
        self.offset += Int64(bytes.readableBytes)
    }

    /// Flushes to disk and publishes onto `target` (see ``publishFile(_:as:replacing:)``).
    func commit(to target: FilePath, overwrite: Bool) async throws {
        do {
            try await self.handle.synchronize()
            try await self.handle.closeRegardlessOfCancellation()
            self.open = false
        } catch {
            throw FerryClientError.localFile("cannot flush '\(self.path)': \(FerryConnection.describe(error))")
        }
        let temporary = self.path.string
        let destination = target.string
        let failure = try await NIOThreadPool.singleton.runIfActive {
            publishFile(temporary, as: destination, replacing: overwrite)
        }
        switch failure {
        case 0:
            return
        case EEXIST:
            throw FerryClientError.localFile(
                "'\(destination)' appeared during the download; it was left alone (use --force to replace it)"
            )
        default:
            throw FerryClientError.localFile("cannot create '\(destination)': \(String(cString: strerror(failure)))")
        }
    }

    /// Removes the temporary file. Never throws: it runs on failure paths.
    func discard() async {
        if self.open {
            try? await self.handle.closeRegardlessOfCancellation()
            self.open = false
        }
        let temporary = self.path.string
        if (try? await NIOThreadPool.singleton.runIfActive { unlink(temporary) }) == nil {
            // The pool is gone or the task was cancelled: one short syscall inline rather than a leftover file.
            unlink(temporary)
        }
    }
}
