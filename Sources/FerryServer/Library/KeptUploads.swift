import Crypto
import FerryProtocol
import FerryTransport
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Uploads cut short and kept to be resumed (protocol version 4, SPEC.md §7.3), in `.ferry-staging/.kept/`: one
/// folder for every server on the library, so that any of them resumes what another kept.
///
/// Each upload is two files named after the SHA-256 of its token (the token itself, a capability, is never written
/// down): the bytes received so far, and a record (``KeptUploadRecord``) of how many of them are verified, their
/// CRC-32, and whom and what they belong to. The upload's receiver holds an `flock` on the bytes' file for as long as
/// it writes them, so two connections never write one upload, and the clean-up never removes one in progress.
///
/// The record never claims more than is on stable storage: the bytes are flushed (`fdatasync`) before a record naming
/// them is written, whole, under a temporary name, at every checkpoint while the upload arrives
/// (``checkpointInterval``) and when it is cut. A server killed at any moment leaves a record that is true, if
/// behind; the bytes after it are cut off when the upload resumes.
///
/// Kept uploads expire ``lifetime`` after their record was last written, and all of them together may hold at most
/// ``byteLimit`` bytes and be at most ``maximumCount``: keeping one more removes the oldest first, and one larger than
/// the limit is not kept at all. An upload cut before ``minimumKept`` bytes is not kept either: resuming it would save
/// little, and without that floor a client could leave millions of one-byte uploads (two files each) within the byte
/// limit.
/// An upload that is committed leaves a record that says so (no bytes) for as long, so that a client that lost OK
/// on the way learns that its upload was stored instead of trying again into "file exists".
final class KeptUploads: Sendable {
    /// Inside ``StagingArea/sharedFolderName``; a dot-name, so no server takes it for an abandoned staging area.
    static let folderName = ".kept"
    static let recordSuffix = ".upload"
    /// The fewest verified bytes worth keeping: one DATA frame of the size clients send files in.
    static let minimumKept = UInt64(ProtocolLimits.defaultDataChunkLength)
    /// The most uploads, kept or recorded as committed, the folder holds; the oldest go first.
    static let maximumCount = 4096

    let lifetime: Duration
    let byteLimit: UInt64
    /// How many bytes may arrive between two records while an upload is received.
    let checkpointInterval: UInt64
    private let library: PinnedFolder
    private let folders = Mutex<(shared: PinnedFolder?, kept: PinnedFolder?)>((nil, nil))

    init(in library: PinnedFolder, lifetime: Duration, byteLimit: UInt64, checkpointInterval: UInt64) {
        self.library = library
        self.lifetime = lifetime
        self.byteLimit = byteLimit
        self.checkpointInterval = max(checkpointInterval, 1)
    }

    /// How often a running server looks for kept uploads that expired: often enough that none outlives its lifetime
    /// by more than half of it, and at most every 10 minutes.
    var sweepInterval: Duration {
        min(max(self.lifetime / 2, .seconds(1)), .seconds(600))
    }

    /// The folder, made (0700) if missing or removed. Blocking.
    func folder() throws(LibraryError) -> PinnedFolder {
        try self.folders.withLock {
            (folders: inout (shared: PinnedFolder?, kept: PinnedFolder?)) throws(LibraryError) in
            if let kept = folders.kept, !kept.isRemoved { return kept }
            do throws(PinningError) {
                if folders.shared?.isRemoved ?? true {
                    folders.shared = try self.library.openFolder(StagingArea.sharedFolderName, creatingWith: 0o700)
                }
                guard let shared = folders.shared else { throw PinningError(errno: ENOENT, path: "") }
                let kept = try shared.openFolder(Self.folderName, creatingWith: 0o700)
                folders.kept = kept
                return kept
            } catch {
                throw LibraryError.storage("cannot make the folder of kept uploads: \(error)")
            }
        }
    }

    /// The name of an upload's files: the SHA-256 of its token, in hex.
    static func fileName(of token: UploadToken) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(UploadToken.length)
        for half in [token.high, token.low] {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: half >> shift)) }
        }
        return SHA256.hash(data: bytes).map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
    }

    // MARK: - Records

    /// Reads the record of `name` in `folder`; `nil` if there is none or it cannot be read. Blocking.
    static func readRecord(_ name: String, in folder: PinnedFolder) -> KeptUploadRecord? {
        guard
            case .contents(let bytes, _) = BlockingFileIO.readSmallFile(
                at: folder.path(of: name + Self.recordSuffix),
                upTo: 8192,
                followingLinks: false
            )
        else { return nil }
        return KeptUploadRecord(parsing: String(decoding: bytes.readableBytesView, as: UTF8.self))
    }

    /// Writes the record of `name`, whole, and unless told otherwise flushed with its folder. Blocking.
    @discardableResult
    static func writeRecord(
        _ record: KeptUploadRecord,
        _ name: String,
        in folder: PinnedFolder,
        flushing: Bool = true
    ) -> SystemCallError? {
        BlockingFileIO.writeWhole(
            ByteBuffer(string: record.encoded),
            to: folder.path(of: name + Self.recordSuffix),
            mode: 0o600,
            flushing: flushing
        )
    }

    /// Flushes the first `record.kept` bytes of an upload's open file, then writes the record naming them. Blocking.
    static func checkpoint(
        _ descriptor: Int32,
        _ record: KeptUploadRecord,
        _ name: String,
        in folder: PinnedFolder
    ) -> SystemCallError? {
        guard fdatasync(descriptor) == 0 else { return SystemCallError(code: errno) }
        return Self.writeRecord(record, name, in: folder)
    }

    /// Takes the lock on an upload's open file without waiting: `false` if another connection holds it.
    static func lock(_ descriptor: Int32) -> Bool {
        flock(descriptor, LOCK_EX | LOCK_NB) == 0
    }

    /// Removes an upload's files. Blocking.
    static func remove(_ name: String, in folder: PinnedFolder) {
        unlinkat(folder.descriptor, name, 0)
        unlinkat(folder.descriptor, name + Self.recordSuffix, 0)
    }

    /// Whether the record of an upload was last written longer ago than ``lifetime``. Blocking.
    func isExpired(_ name: String, in folder: PinnedFolder, now: Int64 = Int64(time(nil))) -> Bool {
        var info = stat()
        guard fstatat(folder.descriptor, name + Self.recordSuffix, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return true }
        return now - Int64(info.st_mtim.tv_sec) > self.lifetime.components.seconds
    }

    // MARK: - Clean-up

    /// Removes what has expired, the bytes of uploads that never got a record (a server stopped before its first
    /// checkpoint) once they have been still for an hour, and then the oldest kept uploads while all of them hold more
    /// than ``byteLimit``. Uploads being received (locked) are never touched. Blocking.
    ///
    /// - Returns: how many uploads it removed.
    @discardableResult
    func sweep() -> Int {
        guard let folder = try? self.folder() else { return 0 }
        let now = Int64(time(nil))
        var records: Set<String> = []
        var files: [String] = []
        try? FileLibrary.forEachEntry(in: folder.path) { _, name, type in
            guard type == DT_REG || type == DT_UNKNOWN, name.first != UInt8(ascii: ".") else { return }
            let text = String(decoding: name, as: UTF8.self)
            if text.hasSuffix(Self.recordSuffix) {
                records.insert(String(text.dropLast(Self.recordSuffix.utf8.count)))
            } else if !text.contains(".") {
                files.append(text)
            }
        }
        var removed = 0
        // Kept (unlocked) uploads that stay: their size and when their record was written, for the byte limit.
        var kept: [(name: String, size: UInt64, written: Int64)] = []
        for name in Set(files).union(records).sorted() {
            let descriptor = openat(folder.descriptor, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            defer { if descriptor >= 0 { close(descriptor) } }
            if descriptor >= 0, !Self.lock(descriptor) { continue }  // being received
            var info = stat()
            let size = descriptor >= 0 && fstat(descriptor, &info) == 0 ? UInt64(max(info.st_size, 0)) : 0
            var recordInfo = stat()
            let hasRecord =
                records.contains(name)
                && fstatat(folder.descriptor, name + Self.recordSuffix, &recordInfo, AT_SYMLINK_NOFOLLOW) == 0
            if hasRecord {
                guard now - Int64(recordInfo.st_mtim.tv_sec) <= self.lifetime.components.seconds else {
                    Self.remove(name, in: folder)
                    removed += 1
                    continue
                }
                if descriptor >= 0 { kept.append((name, size, Int64(recordInfo.st_mtim.tv_sec))) }
            } else if descriptor >= 0, now - Int64(info.st_mtim.tv_sec) > Int64(StagingArea.abandonedAge) {
                Self.remove(name, in: folder)
                removed += 1
            }
        }
        var total = kept.reduce(0) { $0 + $1.size }
        var evicted: Set<String> = []
        for upload in kept.sorted(by: { $0.written < $1.written }) where total > self.byteLimit {
            Self.remove(upload.name, in: folder)
            evicted.insert(upload.name)
            total -= upload.size
            removed += 1
        }
        // Then the count, records of committed uploads included (uploads being received hold no record yet, or are
        // locked, and are not counted).
        var recorded: [(name: String, written: Int64)] = []
        for name in records where !evicted.contains(name) {
            var info = stat()
            guard fstatat(folder.descriptor, name + Self.recordSuffix, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                continue
            }
            recorded.append((name, Int64(info.st_mtim.tv_sec)))
        }
        if recorded.count > Self.maximumCount {
            for upload in recorded.sorted(by: { $0.written < $1.written }).prefix(recorded.count - Self.maximumCount) {
                let descriptor = openat(folder.descriptor, upload.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                defer { if descriptor >= 0 { close(descriptor) } }
                if descriptor >= 0, !Self.lock(descriptor) { continue }  // being received
                Self.remove(upload.name, in: folder)
                removed += 1
            }
        }
        return removed
    }
}

/// What a server knows of a kept upload (``KeptUploads``), as its record file says it, in lines of text.
struct KeptUploadRecord: Hashable, Sendable {
    enum State: String, Sendable {
        /// Cut short: `kept` bytes are verified and flushed, and the rest may follow.
        case receiving
        /// Verified whole and committed as `name`; nothing is kept.
        case committed
    }

    var state: State
    var name: String
    var size: UInt64
    var overwrite: Bool
    /// The account that began it; `nil` for an anonymous client. Only the same may resume it.
    var user: String?
    /// How many bytes from the file's start are verified and on stable storage (all of them once committed).
    var kept: UInt64
    /// Their CRC-32 (the whole file's once committed).
    var crc32: UInt32

    static let header = "ferry-kept-upload 1"

    var encoded: String {
        """
        \(Self.header)
        state \(self.state.rawValue)
        size \(self.size)
        overwrite \(self.overwrite ? 1 : 0)
        kept \(self.kept)
        crc32 \(String(self.crc32, radix: 16))
        user \(self.user.map { "=" + $0 } ?? "-")
        name \(self.name)

        """
    }

    init(
        state: State,
        name: String,
        size: UInt64,
        overwrite: Bool,
        user: String?,
        kept: UInt64,
        crc32: UInt32
    ) {
        self.state = state
        self.name = name
        self.size = size
        self.overwrite = overwrite
        self.user = user
        self.kept = kept
        self.crc32 = crc32
    }

    init?(parsing text: String) {
        guard let fields = KeyValueRecord.fields(of: text, header: Self.header) else { return nil }
        guard let state = fields["state"].flatMap({ State(rawValue: String($0)) }),
            let name = fields["name"], let user = fields["user"],
            let size = fields["size"].flatMap({ UInt64($0) }),
            let overwrite = fields["overwrite"].flatMap({ UInt8($0) }),
            let kept = fields["kept"].flatMap({ UInt64($0) }),
            let crc32 = fields["crc32"].flatMap({ UInt32($0, radix: 16) }),
            kept <= size
        else { return nil }
        self.init(
            state: state,
            name: String(name),
            size: size,
            overwrite: overwrite != 0,
            user: user == "-" ? nil : String(user.dropFirst()),
            kept: kept,
            crc32: crc32
        )
    }

    /// Whether a STOR for `name` of `size` bytes by `user` may take this upload over: the token alone is not enough.
    func belongs(to user: String?, name: String, size: UInt64) -> Bool {
        self.user == user && self.name == name && self.size == size
    }
}
