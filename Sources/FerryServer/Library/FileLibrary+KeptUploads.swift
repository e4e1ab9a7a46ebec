import FerryProtocol
import FerryTransport
import NIOCore
import NIOPosix
import _NIOFileSystem

#if canImport(Glibc)
import Glibc
#endif

/// How a server keeps uploads that were cut short (``KeptUploads``): for how long, and how many bytes at most.
public struct KeptUploadPolicy: Sendable, Hashable {
    /// How long a kept upload waits for its client after its last bytes arrived; then it is removed.
    public var lifetime: Duration
    /// The most bytes all kept uploads may hold together; the oldest go first.
    public var byteLimit: UInt64
    /// How many bytes may arrive between two records while an upload is received: what a server killed outright
    /// (`SIGKILL`, a crash) may lose of it at most, and the cost of a flush each time.
    public var checkpointInterval: UInt64

    public init(
        lifetime: Duration = .seconds(24 * 3600),
        byteLimit: UInt64 = 16 << 30,
        checkpointInterval: UInt64 = 16 << 20
    ) {
        self.lifetime = lifetime
        self.byteLimit = byteLimit
        self.checkpointInterval = checkpointInterval
    }
}

/// A resumable upload being received: its token, its files' name in ``KeptUploads``, and its record as the
/// last checkpoint left it.
struct KeptUploadHandle: Sendable {
    let token: UploadToken
    let fileName: String
    let folder: PinnedFolder
    var record: KeptUploadRecord
}

/// What a STOR with a token finds (``FileLibrary/claimKeptUpload(_:name:size:user:upTo:)``).
enum KeptUploadClaim: Sendable {
    /// Its upload, locked for this connection and cut back to its verified bytes (to none if they are more than the
    /// STOR's offset allows).
    case resumed(StagingFile, KeptUploadHandle)
    /// Its upload was committed already; the record holds the whole file's CRC-32.
    case committed(KeptUploadRecord)
    /// Another connection is receiving it now.
    case inProgress
    /// No upload of this client's with this name and size (never was, expired, removed, or someone else's).
    case unknown
}

extension FileLibrary {
    /// A new resumable upload: a staging file in ``KeptUploads``' folder, locked, with a fresh token.
    func beginKeptUpload(
        name: String,
        size: UInt64,
        overwrite: Bool,
        user: String?
    ) async throws -> (StagingFile, KeptUploadHandle) {
        let kept = self.keptUploads
        let token = UploadToken.random()
        let fileName = KeptUploads.fileName(of: token)
        let folder: PinnedFolder
        do {
            folder = try await self.threadPool.runIfActive { try kept.folder() }
        } catch let error as LibraryError {
            throw error
        } catch {
            throw LibraryError.storage("cannot make the folder of kept uploads: \(error)")
        }
        let path = FilePath(folder.path(of: fileName))
        let handle: WriteFileHandle
        do {
            handle = try await self.fileSystem.openFile(
                forWritingAt: path,
                options: OpenOptions.Write(
                    existingFile: .none,
                    newFile: OpenOptions.NewFile(permissions: [.ownerReadWrite], transactionalCreation: false),
                    followSymbolicLinks: false,
                    closeOnExec: true
                )
            )
        } catch {
            throw LibraryError.storage("cannot create a staging file: \(error)")
        }
        // Nobody else can know the name yet: the lock cannot be held. It is taken so that the clean-up and other
        // servers see the upload as in progress.
        _ = try? await handle.withUnsafeDescriptor { KeptUploads.lock($0.rawValue) }
        let record = KeptUploadRecord(
            state: .receiving,
            name: name,
            size: size,
            overwrite: overwrite,
            user: user,
            kept: 0,
            crc32: 0
        )
        return (
            StagingFile(handle: handle, path: path, area: folder),
            KeptUploadHandle(token: token, fileName: fileName, folder: folder, record: record)
        )
    }

    /// Looks up the upload `token` names for a STOR of `name`, `size` bytes, by `user`, and takes it over if it is
    /// theirs: locked, its file cut back to the verified bytes its record names, or emptied if they are more than
    /// `maximumOffset` (SPEC.md §7.3: READY's offset is the kept length or 0).
    func claimKeptUpload(
        _ token: UploadToken,
        name: String,
        size: UInt64,
        user: String?,
        upTo maximumOffset: UInt64
    ) async -> KeptUploadClaim {
        let kept = self.keptUploads
        let fileName = KeptUploads.fileName(of: token)
        guard
            let (folder, found) = try? await self.threadPool.runIfActive({ () -> (PinnedFolder, KeptUploadRecord?) in
                let folder = try kept.folder()
                guard !kept.isExpired(fileName, in: folder) else { return (folder, nil) }
                return (folder, KeptUploads.readRecord(fileName, in: folder))
            }),
            let found, found.belongs(to: user, name: name, size: size)
        else { return .unknown }
        if found.state == .committed {
            return .committed(found)
        }
        let path = FilePath(folder.path(of: fileName))
        guard
            let handle = try? await self.fileSystem.openFile(
                forWritingAt: path,
                options: OpenOptions.Write(
                    existingFile: .open,
                    newFile: nil,
                    followSymbolicLinks: false,
                    closeOnExec: true
                )
            )
        else { return .unknown }
        enum Taken: Sendable {
            case taken(KeptUploadRecord)
            case inProgress
            case gone
        }
        let taken = try? await handle.withUnsafeDescriptor { descriptor -> Taken in
            let descriptor = descriptor.rawValue
            guard KeptUploads.lock(descriptor) else { return .inProgress }
            // Read again under the lock: the connection that held it may have moved it on, or the clean-up removed it.
            var info = stat()
            guard fstat(descriptor, &info) == 0, info.st_nlink > 0,
                var record = KeptUploads.readRecord(fileName, in: folder), record.state == .receiving,
                record.belongs(to: user, name: name, size: size), UInt64(max(info.st_size, 0)) >= record.kept
            else { return .gone }
            // The kept bytes are read again: resumed, they must still be the bytes received (the disk may have
            // failed them, or someone changed them), or the file committed would not be the client's.
            if record.kept > maximumOffset || Self.checksum(fileName, in: folder, length: record.kept) != record.crc32 {
                record.kept = 0
                record.crc32 = 0
            }
            guard ftruncate(descriptor, off_t(record.kept)) == 0 else { return .gone }
            return .taken(record)
        }
        switch taken {
        case .taken(let record)?:
            return .resumed(
                StagingFile(handle: handle, path: path, area: folder),
                KeptUploadHandle(token: token, fileName: fileName, folder: folder, record: record)
            )
        case .inProgress?:
            try? await handle.closeRegardlessOfCancellation()
            return .inProgress
        case .gone?, nil:
            try? await handle.closeRegardlessOfCancellation()
            return .unknown
        }
    }

    /// The CRC-32 of the first `length` bytes of a kept upload's file, read through a descriptor of its own (its
    /// writer's is write-only). Blocking.
    private static func checksum(_ fileName: String, in folder: PinnedFolder, length: UInt64) -> UInt32? {
        let descriptor = openat(folder.descriptor, fileName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        return BlockingFileIO.checksum(descriptor, length: length)
    }

    /// Keeps an upload that was cut short: its verified bytes flushed, its record written, its lock released. One
    /// with fewer than ``KeptUploads/minimumKept`` verified bytes, or alone larger than the limit on kept bytes, is
    /// removed instead; older ones go to make room.
    ///
    /// - Returns: whether it was kept.
    @discardableResult
    func keep(_ staging: StagingFile, _ upload: KeptUploadHandle) async -> Bool {
        let kept = self.keptUploads
        let record = upload.record
        let written = try? await staging.handle.withUnsafeDescriptor { descriptor -> Bool in
            guard record.kept >= KeptUploads.minimumKept, record.kept <= kept.byteLimit,
                ftruncate(descriptor.rawValue, off_t(record.kept)) == 0
            else { return false }
            return KeptUploads.checkpoint(descriptor.rawValue, record, upload.fileName, in: upload.folder) == nil
        }
        try? await staging.handle.closeRegardlessOfCancellation()
        let fileName = upload.fileName
        let folder = upload.folder
        _ = try? await self.threadPool.runIfActive {
            if written != true { KeptUploads.remove(fileName, in: folder) }
            kept.sweep()
        }
        return written == true
    }

    /// Removes kept uploads that expired, or that are over the limit (``KeptUploads/sweep()``).
    func sweepKeptUploads() async {
        let kept = self.keptUploads
        _ = try? await self.threadPool.runIfActive { kept.sweep() }
    }

    /// Removes a resumable upload that will not be resumed (it failed verification, or its client gave up).
    func discard(_ staging: StagingFile, _ upload: KeptUploadHandle) async {
        await self.discard(staging)
        let fileName = upload.fileName
        let folder = upload.folder
        _ = try? await self.threadPool.runIfActive { KeptUploads.remove(fileName, in: folder) }
    }

    /// Leaves a claimed upload as it was kept, for a later STOR: for a claim refused before READY.
    func release(_ staging: StagingFile) async {
        try? await staging.handle.closeRegardlessOfCancellation()
    }

    /// Commits a resumable upload (``commit(_:as:overwrite:checksums:)``), then leaves a record that it was
    /// committed, with the whole file's CRC-32, in place of the bytes: a client whose OK was lost on the way asks
    /// again with its token and is told so. That record is not flushed: losing it costs only that answer.
    func commit(
        _ staging: StagingFile,
        _ upload: KeptUploadHandle,
        fileCRC32: UInt32,
        checksums: ChunkChecksumBuilder
    ) async throws {
        var record = upload.record
        do {
            try await self.commit(staging, as: record.name, overwrite: record.overwrite, checksums: checksums)
        } catch {
            let fileName = upload.fileName
            let folder = upload.folder
            _ = try? await self.threadPool.runIfActive { KeptUploads.remove(fileName, in: folder) }
            throw error
        }
        record.state = .committed
        record.kept = record.size
        record.crc32 = fileCRC32
        let fileName = upload.fileName
        let folder = upload.folder
        let committed = record
        _ = try? await self.threadPool.runIfActive {
            KeptUploads.writeRecord(committed, fileName, in: folder, flushing: false)
        }
    }
}
