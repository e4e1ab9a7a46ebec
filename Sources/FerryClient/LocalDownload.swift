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

/// A small download received whole and verified, to be written by ``LocalDownload/publish(_:overwrite:)``.
struct VerifiedDownload: Sendable {
    let bytes: ByteBuffer
    let target: FilePath
    /// The server's modification time, to give the file (`--preserve-time`); `nil` to leave it at now.
    var modified: Int64? = nil
}

/// A download in progress: a hidden temporary file beside its destination, published by rename only after the
/// transfer has been verified, so the destination never holds a partial or unverified file.
final class LocalDownload {
    private let handle: WriteFileHandle
    private let path: FilePath
    private var offset: Int64 = 0
    private var open = true
    /// Where the record of a resumable download goes (``KeptPartial``); `nil` for one that is never kept.
    private var recordPath: String?

    /// A resumable download: its bytes go to the target's partial file (``KeptPartial/paths(for:)``), after the
    /// `record.kept` bytes already there when `resuming`. If the transfer is cut, ``keep()`` leaves the file and
    /// writes its record; so does a signal that stops the process (``PartialDownloads/removeAll()``).
    static func openKept(for target: FilePath, record: KeptPartial, resuming: Bool) async throws -> LocalDownload {
        let (partial, recordPath) = KeptPartial.paths(for: target.string)
        let opened = try? await NIOThreadPool.singleton.runIfActive {
            PartialDownloads.openKept(partial, resuming: resuming, record: record, at: recordPath)
        }
        guard let opened, opened == 0 else {
            let reason = opened.map { String(cString: strerror($0)) } ?? "the process is stopping"
            throw FerryClientError.localFile("cannot create a file beside '\(target)': \(reason)")
        }
        do {
            let handle = try await FileSystem.shared.openFile(
                forWritingAt: FilePath(partial),
                options: OpenOptions.Write(
                    existingFile: .open,
                    newFile: nil,
                    followSymbolicLinks: false,
                    closeOnExec: true
                )
            )
            let download = LocalDownload(handle: handle, path: FilePath(partial))
            download.offset = Int64(record.kept)
            download.recordPath = recordPath
            return download
        } catch {
            unlink(partial)
            PartialDownloads.remove(partial)
            throw FerryClientError.localFile(
                "cannot create a file beside '\(target)': \(FerryConnection.describe(error))"
            )
        }
    }

    static func create(beside target: FilePath) async throws -> LocalDownload {
        let path = Self.temporaryPath(beside: target)
        let temporary = path.string
        let created = try? await NIOThreadPool.singleton.runIfActive { PartialDownloads.create(temporary) }
        guard let created, created == 0 else {
            let reason = created.map { String(cString: strerror($0)) } ?? "the process is stopping"
            throw FerryClientError.localFile("cannot create a file beside '\(target)': \(reason)")
        }
        do {
            // Created (empty) and registered above, under the registry's lock: opened here as it is.
            let handle = try await FileSystem.shared.openFile(
                forWritingAt: path,
                options: OpenOptions.Write(
                    existingFile: .open,
                    newFile: nil,
                    followSymbolicLinks: false,
                    closeOnExec: true
                )
            )
            return LocalDownload(handle: handle, path: path)
        } catch {
            unlink(temporary)
            PartialDownloads.remove(path.string)
            throw FerryClientError.localFile(
                "cannot create a file beside '\(target)': \(FerryConnection.describe(error))"
            )
        }
    }

    /// Writes small, already verified downloads, all in one thread-pool job: for each, a temporary file beside
    /// its target, write, flush, publish (``publishFile(_:as:replacing:)``). The same guarantees as streaming
    /// each one, without a job per system call or per file.
    ///
    /// - Returns: for each file in order, `nil` once it is in place, or why it is not.
    static func publish(_ files: [VerifiedDownload], overwrite: Bool) async -> [FerryClientError?] {
        let temporaries = files.map { Self.temporaryPath(beside: $0.target).string }
        guard PartialDownloads.register(temporaries) else {
            return files.map { .localFile("stopped before '\($0.target)' was written") }
        }
        defer { PartialDownloads.remove(temporaries) }
        do {
            let group = zip(files, temporaries).map { file, temporary in
                BlockingFileIO.GroupFile(
                    bytes: file.bytes,
                    temporary: temporary,
                    destination: file.target.string,
                    replacing: overwrite,
                    modified: file.modified
                )
            }
            return try await NIOThreadPool.singleton.runIfActive {
                zip(group, BlockingFileIO.publishGroup(group, gate: PartialDownloads.gate)).map {
                    file,
                    failure in
                    switch failure {
                    case nil:
                        nil
                    case .create(let error)?:
                        .localFile("cannot create a file beside '\(file.destination)': \(error)")
                    case .write(let error)?:
                        .localFile("writing '\(file.destination)' failed: \(error)")
                    case .publish(let code)?:
                        Self.describePublishing(code, file.destination)
                    }
                }
            }
        } catch {
            return files.map { .localFile("cannot write '\($0.target)': \(FerryConnection.describe(error))") }
        }
    }

    private static func temporaryPath(beside target: FilePath) -> FilePath {
        var random = SystemRandomNumberGenerator()
        let directory = target.removingLastComponent()
        let base = (target.lastComponent?.string ?? "download").prefix(utf8Bytes: Self.longestBase)
        return (directory.isEmpty ? FilePath(".") : directory)
            .appending(".\(base).ferry-part-\(String(random.next() & 0xFFFF_FFFF, radix: 16))")
    }

    /// How much of the target's name a temporary name keeps: with the dot, `.ferry-part-` and eight hex digits it
    /// stays within the 255 bytes a file name may have, as a Ferry name (up to 255 bytes itself) may not.
    private static let longestBase = 255 - ".".utf8.count - ".ferry-part-".utf8.count - 8

    private static func describePublishing(_ failure: Int32, _ destination: String) -> FerryClientError? {
        switch failure {
        case 0:
            nil
        case EEXIST:
            .localFile("'\(destination)' appeared during the download; it was left alone (use --force to replace it)")
        default:
            .localFile("cannot create '\(destination)': \(String(cString: strerror(failure)))")
        }
    }

    private init(handle: WriteFileHandle, path: FilePath) {
        self.handle = handle
        self.path = path
    }

    /// The write of the next `chunks`, in order, in one thread-pool job, to be run (by a child task, while the next
    /// chunks arrive and are checked) before the following one is started. Each chunk counts as kept once it is
    /// written, so a cut transfer resumes after the last whole one.
    func nextWrite(_ chunks: [DataChunk]) -> @Sendable () async throws -> Void {
        let handle = self.handle
        let path = self.path
        let start = self.offset
        let kept = self.recordPath != nil
        for chunk in chunks {
            self.offset += Int64(chunk.length)
        }
        return {
            let failure: SystemCallError?
            do {
                failure = try await handle.withUnsafeDescriptor { descriptor in
                    var offset = start
                    for chunk in chunks {
                        if let failure = BlockingFileIO.writeHandingToDisk(descriptor.rawValue, chunk, at: offset) {
                            return failure
                        }
                        offset += Int64(chunk.length)
                        if kept {
                            PartialDownloads.advance(
                                path.string,
                                by: UInt64(chunk.length),
                                crc32: chunk.crc32
                            )
                        }
                    }
                    return nil
                }
            } catch {
                throw FerryClientError.localFile("writing '\(path)' failed: \(FerryConnection.describe(error))")
            }
            if let failure {
                throw FerryClientError.localFile("writing '\(path)' failed: \(failure)")
            }
        }
    }

    /// Keeps what a cut transfer wrote, to be resumed: flushes the file and writes its record. Returns the bytes
    /// kept; 0 (and the file removed) if there are none, or if this download is not resumable. Never throws.
    @discardableResult
    func keep() async -> UInt64 {
        let temporary = self.path.string
        guard let kept = PartialDownloads.keptRecord(temporary), kept.record.kept > 0 else {
            await self.discard()
            return 0
        }
        if self.open {
            try? await self.handle.synchronize()
            try? await self.handle.closeRegardlessOfCancellation()
            self.open = false
        }
        let written = (try? await NIOThreadPool.singleton.runIfActive { kept.record.write(to: kept.at) }) ?? false
        PartialDownloads.remove(temporary)
        guard written else {
            unlink(temporary)
            return 0
        }
        return kept.record.kept
    }

    /// Flushes to disk and publishes onto `target` (see ``publishFile(_:as:replacing:)``), with the modification time
    /// `modified` if one is given.
    func commit(to target: FilePath, overwrite: Bool, modified: Int64? = nil) async throws {
        do {
            if let modified {
                let code = try await self.handle.withUnsafeDescriptor {
                    BlockingFileIO.setModificationTime($0.rawValue, modified)
                }
                if code != 0 { throw SystemCallError(code: code) }
            }
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
        PartialDownloads.remove(temporary)
        if let recordPath = self.recordPath {
            unlink(recordPath)
        }
        if let error = Self.describePublishing(failure, destination) {
            throw error
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
        PartialDownloads.remove(temporary)
        if let recordPath = self.recordPath {
            unlink(recordPath)
        }
    }
}

extension String {
    /// The longest prefix of whole characters that takes at most `limit` bytes of UTF-8: a target's name cut to
    /// leave room for what a hidden name beside it adds.
    func prefix(utf8Bytes limit: Int) -> String {
        guard self.utf8.count > limit else { return self }
        var kept = 0
        var prefix = ""
        for character in self {
            kept += character.utf8.count
            guard kept <= limit else { break }
            prefix.append(character)
        }
        return prefix
    }
}
