import FerryProtocol
import FerryTransport
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A download cut short and kept to be resumed: the bytes received so far in `.TARGET.ferry-partial` beside the
/// target, and this record of them in `.TARGET.ferry-partial.meta`, written whole (temporary name, then rename).
///
/// The record names where the bytes came from (server and name), which version of the file they belong to (FILE_INFO's
/// size and modification time), how many were kept, and their CRC-32. A later `get` of the same name to the same
/// target resumes only if all of that still holds: the kept bytes are read again and must give that CRC (a partial
/// file edited since is caught here), and the server sends the rest only if its file is still that version (RETR's
/// condition, SPEC.md §7.2). The whole-file CRC at END then proves the file published is the server's, whole.
struct KeptPartial: Hashable, Sendable {
    var server: String
    var name: String
    var version: FileVersion
    var kept: UInt64
    var crc32: UInt32

    /// The partial file and its record, beside `target`.
    static func paths(for target: String) -> (partial: String, record: String) {
        let slash = target.lastIndex(of: "/")
        let folder = slash.map { String(target[...$0]) } ?? ""
        let base = slash.map { String(target[target.index(after: $0)...]) } ?? target
        let partial = folder + "." + base.prefix(utf8Bytes: Self.longestBase) + ".ferry-partial"
        return (partial, partial + ".meta")
    }

    /// With the dot, `.ferry-partial.meta` and the suffix of the record's temporary name, every name stays within
    /// 255 bytes.
    private static let longestBase =
        255 - ".".utf8.count - ".ferry-partial.meta".utf8.count - BlockingFileIO.writeWholeSuffixLength

    static let header = "ferry-partial 1"

    var encoded: String {
        """
        \(Self.header)
        server \(self.server)
        size \(self.version.size)
        modified \(self.version.modified)
        kept \(self.kept)
        crc32 \(String(self.crc32, radix: 16))
        name \(self.name)

        """
    }

    init(server: String, name: String, version: FileVersion, kept: UInt64, crc32: UInt32) {
        self.server = server
        self.name = name
        self.version = version
        self.kept = kept
        self.crc32 = crc32
    }

    init?(parsing text: String) {
        guard let fields = KeyValueRecord.fields(of: text, header: Self.header) else { return nil }
        guard let server = fields["server"], let name = fields["name"],
            let size = fields["size"].flatMap({ UInt64($0) }),
            let modified = fields["modified"].flatMap({ Int64($0) }),
            let kept = fields["kept"].flatMap({ UInt64($0) }),
            let crc32 = fields["crc32"].flatMap({ UInt32($0, radix: 16) }),
            kept <= size
        else { return nil }
        self.init(
            server: String(server),
            name: String(name),
            version: FileVersion(size: size, modified: modified),
            kept: kept,
            crc32: crc32
        )
    }

    /// Writes the record beside the partial: whole or not at all (``BlockingFileIO/writeWhole(_:to:mode:exactMode:replacing:flushing:)``).
    /// Blocking. Returns whether it was written.
    @discardableResult
    func write(to path: String) -> Bool {
        BlockingFileIO.writeWhole(ByteBuffer(string: self.encoded), to: path, mode: 0o644) == nil
    }

    /// What ``find(for:server:name:maximumAge:)`` found.
    enum Lookup: Sendable {
        /// Nothing kept for this target.
        case none
        /// Kept bytes that check out: resume after them.
        case resumable(KeptPartial)
        /// Something was kept but cannot be resumed (too old, another server or file, edited, unreadable); it was
        /// removed, and the download starts from the beginning.
        case discarded(String)
    }

    /// Looks for a partial download of `name` from `server` kept for `target`, and checks it: its record, its age
    /// (the record's modification time), and the CRC-32 of its kept bytes, read again (any bytes after them, from a
    /// write cut short, are cut off). Blocking: it reads the whole kept part.
    static func find(for target: String, server: String, name: String, maximumAge: Duration) -> Lookup {
        let (partial, recordPath) = Self.paths(for: target)
        var info = stat()
        guard lstat(recordPath, &info) == 0 else {
            if lstat(partial, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                unlink(partial)  // the bytes of a download whose record was never written
            }
            return .none
        }
        func discard(_ reason: String) -> Lookup {
            unlink(partial)
            unlink(recordPath)
            return .discarded(reason)
        }
        let age = Int64(time(nil)) - Int64(info.st_mtim.tv_sec)
        guard age <= maximumAge.components.seconds else {
            return discard("the partial download is older than the limit (--partial-max-age)")
        }
        guard
            case .contents(let bytes, _) = BlockingFileIO.readSmallFile(
                at: recordPath,
                upTo: 8192,
                followingLinks: false
            ),
            let record = KeptPartial(parsing: String(decoding: bytes.readableBytesView, as: UTF8.self))
        else {
            return discard("the partial download's record cannot be read")
        }
        guard record.server == server, record.name == name else {
            return discard("the partial download came from \(record.server), file '\(record.name)'")
        }
        let descriptor = open(partial, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { return discard("the partial file is missing") }
        defer { close(descriptor) }
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, UInt64(info.st_size) >= record.kept
        else {
            return discard("the partial file is shorter than its record says")
        }
        guard let crc = BlockingFileIO.checksum(descriptor, length: record.kept), crc == record.crc32 else {
            return discard("the partial file's bytes no longer match what was received (edited?)")
        }
        guard ftruncate(descriptor, off_t(record.kept)) == 0 else {
            return discard("the partial file cannot be trimmed to its kept length")
        }
        return .resumable(record)
    }

    /// Removes a kept partial and its record. Blocking.
    static func remove(for target: String) {
        let (partial, record) = Self.paths(for: target)
        unlink(partial)
        unlink(record)
    }
}
