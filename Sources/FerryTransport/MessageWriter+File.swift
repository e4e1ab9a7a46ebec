public import FerryProtocol
public import NIOCore
public import _NIOFileSystem

extension MessageWriter {
    /// Sends bytes `start ..< end` of an open file as DATA frames, reading the next chunk while the current one
    /// is written, and returns the account of what was sent (for END).
    ///
    /// Exactly one chunk (``dataChunkLength(forTransferOf:alongside:)`` unless `chunkLength` says otherwise) is read
    /// ahead, so a slow peer holds the server to about two chunks plus the socket's write buffer, whatever the
    /// file's size. A file that ends early (it shrank while being sent) ends the stream early: the caller sees
    /// `sentLength` short of `end - start`.
    ///
    /// - Throws: ``FileReadError`` when the file cannot be read; the channel's errors as they are.
    public func sendFile(
        _ handle: ReadFileHandle,
        from start: UInt64,
        to end: UInt64,
        chunkLength: Int? = nil,
        progress: (UInt64) -> Void = { _ in },
        sentChunk: (_ length: Int, _ crc32: UInt32) -> Void = { _, _ in }
    ) async throws -> OutgoingTransfer {
        var transfer = OutgoingTransfer()
        let chunkLength = Int64(max(1, chunkLength ?? self.dataChunkLength(forTransferOf: end - min(start, end))))
        let end = Int64(clamping: end)
        var offset = Int64(clamping: start)
        var next = try await Self.read(handle, at: offset, length: min(chunkLength, end - offset))
        while next.readableBytes > 0 {
            let current = DataChunk(next)
            offset += Int64(next.readableBytes)
            let readAt = offset
            let readLength = min(chunkLength, end - offset)
            async let following = Self.read(handle, at: readAt, length: readLength)
            transfer.record(current)
            try await self.write(current)
            sentChunk(current.bytes.readableBytes, current.crc32)
            progress(transfer.sentLength)
            next = try await following
        }
        return transfer
    }

    /// Sends pieces of an open file whose CRC-32s are already known as DATA frames, with `sendfile`: the server
    /// neither reads nor checksums the bytes, and holds none of them. Returns the account of what was sent (for
    /// END).
    ///
    /// The caller closes `handle` after this returns, and only then: queued writes still refer to it until the
    /// channel has taken them, so this returns once everything it wrote has reached the socket or failed (a
    /// closed channel fails what it still held).
    ///
    /// The file's size (`currentSize`) is checked before each piece is queued: a file that shrank ends the transfer
    /// with ``FileReadError`` instead of leaving NIO's `sendfile` with nothing to send, which it would retry at once
    /// until the connection's idle timeout closes it. Only a truncation while a piece is already queued escapes the
    /// check; Ferry itself never truncates a library file (uploads are published by `rename`). `currentSize` must
    /// not use `handle`: NIO holds it while it sends, and refuses a second user (`EBUSY`).
    ///
    /// - Throws: ``FileReadError`` if the file is shorter than a piece; the channel's errors as they are.
    public func sendFile(
        _ handle: NIOFileHandle,
        pieces: some Sequence<ChecksummedPiece>,
        on channel: any Channel,
        currentSize: () -> Int64
    ) async throws -> OutgoingTransfer {
        var transfer = OutgoingTransfer()
        do {
            for piece in pieces {
                let size = currentSize()
                guard size >= Int64(piece.offset) + Int64(piece.length) else {
                    throw FileReadError(underlying: FileShrank(size: size))
                }
                let (header, trailer) = FrameSerializer.dataFrameEnvelope(
                    payloadLength: piece.length,
                    payloadCRC32: piece.crc32,
                    allocator: self.allocator
                )
                let region = FileRegion(
                    fileHandle: handle,
                    readerIndex: Int(piece.offset),
                    endIndex: Int(piece.offset) + piece.length
                )
                try await self.outbound.write(contentsOf: [
                    .byteBuffer(header), .fileRegion(region), .byteBuffer(trailer),
                ])
                transfer.record(length: piece.length, crc32: piece.crc32)
            }
        } catch {
            try? await Self.awaitWritten(on: channel)
            throw error
        }
        try await Self.awaitWritten(on: channel)
        return transfer
    }

    /// Returns once every write queued so far has completed, or throws once one has failed. The outbound writer
    /// hands each write to the event loop before its `write` returns, and the event loop runs writes in order, so
    /// an empty write made now completes after all of them.
    private static func awaitWritten(on channel: any Channel) async throws {
        try await channel.writeAndFlush(IOData.byteBuffer(ByteBuffer())).get()
    }

    private static func read(_ handle: ReadFileHandle, at offset: Int64, length: Int64) async throws -> ByteBuffer {
        guard length > 0 else { return ByteBuffer() }
        do {
            return try await handle.readChunk(fromAbsoluteOffset: offset, length: .bytes(length))
        } catch {
            throw FileReadError(underlying: error)
        }
    }
}

/// The local file being sent could not be read (as opposed to the connection failing).
public struct FileReadError: Error, CustomStringConvertible {
    public var underlying: any Error

    public var description: String {
        (self.underlying as? FileSystemError)?.message ?? "\(self.underlying)"
    }
}

/// The file being sent from its checksums is shorter than they say.
struct FileShrank: Error, CustomStringConvertible {
    var size: Int64

    var description: String {
        self.size < 0 ? "cannot inspect the file" : "the file shrank to \(self.size) bytes while being sent"
    }
}

/// A piece of a file and the CRC-32 of its bytes, to be sent as one DATA frame.
public struct ChecksummedPiece: Hashable, Sendable {
    public var offset: UInt64
    public var length: Int
    public var crc32: UInt32

    public init(offset: UInt64, length: Int, crc32: UInt32) {
        self.offset = offset
        self.length = length
        self.crc32 = crc32
    }
}
