import FerryProtocol
import FerryTransport
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The CRC-32 of each consecutive piece of a stored file, kept beside the file so that a download can hand the
/// file to the kernel (`sendfile`) instead of reading and checksumming every byte again.
///
/// Every byte's CRC-32 is known once: when an upload arrives it is verified frame by frame, and the first download
/// of a file placed in the library by other means checksums it first (from the page cache) or as it goes (from the
/// disk). Keeping those values turns each later download into headers and trailers around file regions the server
/// never touches. A table is a cache: it is used only while the file is provably the one it was made for
/// (``FileIdentity``), and without one a download reads and checksums as before. Even a wrong table cannot pass
/// bad data: the client checks every frame's CRC against the bytes it received.
struct ChunkChecksums: Hashable, Sendable {
    struct Chunk: Hashable, Sendable {
        var length: UInt32
        var crc32: UInt32
    }

    /// What the file was when it was checksummed.
    let identity: FileIdentity
    /// The file's pieces, in order; their lengths add up to the file's size, each within ``maximumChunkLength``.
    let chunks: [Chunk]

    /// Pieces are merged up to the size of a bulk DATA frame: each becomes one frame of a download.
    static let maximumChunkLength = ProtocolLimits.bulkDataChunkLength
    /// 64 GiB of 1 MiB pieces: 512 KiB of table. Larger files (or files uploaded in many short frames that could
    /// not be merged) are sent without a table.
    static let maximumChunkCount = 1 << 16

    /// The pieces from `offset` to the end, each within `limit` bytes (the peer's largest payload). `nil` if
    /// `offset` falls inside a piece (a resumed download is then read and checksummed from there) or a piece is
    /// larger than the peer accepts.
    func pieces(from offset: UInt64, within limit: Int) -> [ChecksummedPiece]? {
        var pieces: [ChecksummedPiece] = []
        var position: UInt64 = 0
        for chunk in self.chunks {
            defer { position += UInt64(chunk.length) }
            if position < offset {
                guard position + UInt64(chunk.length) <= offset else { return nil }
                continue
            }
            guard Int(chunk.length) <= limit else { return nil }
            pieces.append(ChecksummedPiece(offset: position, length: Int(chunk.length), crc32: chunk.crc32))
        }
        return position >= offset ? pieces : nil
    }

    /// The CRC-32 of the file's first `offset` bytes, from the pieces before it; `nil` if `offset` falls inside a
    /// piece. What version 3's END needs of a download resumed at a piece boundary, without reading the file.
    func crc32(upTo offset: UInt64) -> UInt32? {
        var crc: UInt32 = 0
        var position: UInt64 = 0
        for chunk in self.chunks where position < offset {
            position += UInt64(chunk.length)
            guard position <= offset else { return nil }
            crc = CRC32.combine(crc, chunk.crc32, secondLength: UInt64(chunk.length))
        }
        return position == offset ? crc : nil
    }
}

/// Which file a table belongs to: device, inode, size, and the modification and status-change times in
/// nanoseconds. Writing to a file changes its modification time; anything that resets that (`touch -r`, a
/// rename, a new link) changes its status-change time, which no process can set back.
struct FileIdentity: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: UInt64
    var modified: Int64
    var changed: Int64
}

extension FileIdentity {
    /// Whether `now` (a later `fstat` of the same open file) shows the same bytes as this: same file, size and
    /// modification time, and the same status-change time unless the number of names changed.
    ///
    /// Removing or renaming a name of a file, or adding one, moves its status-change time but not its bytes: a file
    /// replaced by an upload (renamed over) or deleted while it was being sent still went out whole and as it was. A
    /// write in the same tick of the file system's clock as the opening, that leaves the size as it was, is the one
    /// change this cannot see.
    ///
    /// A rename keeps the number of names, so a file renamed by this server is recognised by the status-change
    /// time its rename gave it (`renamedAt`, from ``RenamedFiles``); one renamed by another program still counts as
    /// changed.
    func sameBytes(as now: stat, linksThen: UInt64, renamedAt: Int64? = nil) -> Bool {
        let later = FileIdentity(now)
        guard later.device == self.device, later.inode == self.inode, later.size == self.size,
            later.modified == self.modified
        else { return false }
        return later.changed == self.changed || UInt64(now.st_nlink) != linksThen || later.changed == renamedAt
    }

    init(_ info: stat) {
        self.init(
            device: UInt64(info.st_dev),
            inode: UInt64(info.st_ino),
            size: UInt64(clamping: info.st_size),
            modified: FileLibrary.nanoseconds(
                seconds: Int64(info.st_mtim.tv_sec),
                nanoseconds: Int64(info.st_mtim.tv_nsec)
            ),
            changed: FileLibrary.nanoseconds(
                seconds: Int64(info.st_ctim.tv_sec),
                nanoseconds: Int64(info.st_ctim.tv_nsec)
            )
        )
    }
}

/// Collects a transfer's pieces as they pass, merging neighbours (``CRC32/combine(_:_:secondLength:)``) up to
/// ``ChunkChecksums/maximumChunkLength``, so a file uploaded in small frames still downloads in large ones.
struct ChunkChecksumBuilder: Sendable {
    private(set) var chunks: [ChunkChecksums.Chunk] = []
    private(set) var length: UInt64 = 0
    /// Set when the file needs more than ``ChunkChecksums/maximumChunkCount`` pieces: no table is made.
    private(set) var overflowed = false

    mutating func append(length: Int, crc32: UInt32) {
        guard length > 0, !self.overflowed else { return }
        self.length += UInt64(length)
        if let last = self.chunks.last, Int(last.length) + length <= ChunkChecksums.maximumChunkLength {
            self.chunks[self.chunks.count - 1] = ChunkChecksums.Chunk(
                length: last.length + UInt32(length),
                crc32: CRC32.combine(last.crc32, crc32, secondLength: UInt64(length))
            )
        } else if length <= ChunkChecksums.maximumChunkLength, self.chunks.count < ChunkChecksums.maximumChunkCount {
            self.chunks.append(ChunkChecksums.Chunk(length: UInt32(length), crc32: crc32))
        } else {
            self.overflowed = true
            self.chunks = []
        }
    }

    /// The table for a file of this identity, if the pieces cover exactly that file.
    func checksums(for identity: FileIdentity) -> ChunkChecksums? {
        guard !self.overflowed, self.length == identity.size, !self.chunks.isEmpty else { return nil }
        return ChunkChecksums(identity: identity, chunks: self.chunks)
    }
}

// MARK: - Stored form

extension ChunkChecksums {
    /// The stored form, big-endian like the wire:
    ///
    ///     "FCRC" | version u8 (1) | device u64 | inode u64 | size u64 | modified i64 | changed i64 | count u32
    ///     | count × (length u32, crc u32) | CRC-32 of all the preceding bytes u32
    ///
    /// The trailing CRC catches a torn or damaged table; ``init(decoding:)`` checks every field against its limit.
    func encoded() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(Self.headerLength + self.chunks.count * 8 + 4)
        buffer.writeBytes(Self.magic)
        buffer.writeInteger(Self.version)
        buffer.writeInteger(self.identity.device)
        buffer.writeInteger(self.identity.inode)
        buffer.writeInteger(self.identity.size)
        buffer.writeInteger(self.identity.modified)
        buffer.writeInteger(self.identity.changed)
        buffer.writeInteger(UInt32(self.chunks.count))
        for chunk in self.chunks {
            buffer.writeInteger(chunk.length)
            buffer.writeInteger(chunk.crc32)
        }
        buffer.writeInteger(CRC32.checksum(buffer))
        return buffer
    }

    /// Reads a stored table; `nil` for anything that is not a complete, intact, consistent one.
    init?(decoding stored: ByteBuffer) {
        guard stored.readableBytes >= Self.headerLength + 4,
            stored.readableBytes <= Self.maximumEncodedLength,
            let carried = stored.getInteger(at: stored.readerIndex + stored.readableBytes - 4, as: UInt32.self),
            let covered = stored.getSlice(at: stored.readerIndex, length: stored.readableBytes - 4),
            CRC32.checksum(covered) == carried
        else { return nil }
        var buffer = covered
        guard buffer.readBytes(length: Self.magic.count) == Self.magic,
            buffer.readInteger(as: UInt8.self) == Self.version,
            let device = buffer.readInteger(as: UInt64.self),
            let inode = buffer.readInteger(as: UInt64.self),
            let size = buffer.readInteger(as: UInt64.self),
            let modified = buffer.readInteger(as: Int64.self),
            let changed = buffer.readInteger(as: Int64.self),
            let count = buffer.readInteger(as: UInt32.self),
            count > 0, count <= Self.maximumChunkCount,
            buffer.readableBytes == Int(count) * 8
        else { return nil }
        var chunks: [Chunk] = []
        chunks.reserveCapacity(Int(count))
        var total: UInt64 = 0
        for _ in 0..<count {
            guard let length = buffer.readInteger(as: UInt32.self), let crc = buffer.readInteger(as: UInt32.self),
                length > 0, length <= Self.maximumChunkLength
            else { return nil }
            total += UInt64(length)
            chunks.append(Chunk(length: length, crc32: crc))
        }
        guard total == size else { return nil }
        self.init(
            identity: FileIdentity(device: device, inode: inode, size: size, modified: modified, changed: changed),
            chunks: chunks
        )
    }

    private static let magic: [UInt8] = Array("FCRC".utf8)
    private static let version: UInt8 = 1
    private static let headerLength = 4 + 1 + 5 * 8 + 4
    static let maximumEncodedLength = headerLength + maximumChunkCount * 8 + 4
}
