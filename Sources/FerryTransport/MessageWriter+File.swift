public import FerryProtocol
public import NIOCore
public import _NIOFileSystem

extension MessageWriter {
    /// Sends bytes `start ..< end` of an open file as DATA frames, reading the next chunk while the current one
    /// is written, and returns the account of what was sent (for END).
    ///
    /// Exactly one chunk (``dataChunkLength(forTransferOf:)`` unless `chunkLength` says otherwise) is read
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

    /// Sends bytes `start ..< end` of an open file as DATA frames, one chunk in memory at a time: each chunk is read
    /// only once the one before it has been taken by the socket, so a peer that stops reading holds the sender to
    /// one chunk, however many such peers there are. (Reading the next chunk while the last was still queued held
    /// two or three per download: 500 downloads that never read took a server from 26 MiB to 0.65–2.4 GiB.) The
    /// socket's own buffer, several times a chunk, keeps the link busy while the next chunk is read.
    ///
    /// `reserve` is asked for each chunk's length, given how many bytes are left, and `release` told once the chunk
    /// is gone: a server sizes its chunks to what all its downloads hold together. A file that ends early (it
    /// shrank while being sent) ends the stream early: the caller sees `sentLength` short of `end - start`.
    ///
    /// - Throws: ``FileReadError`` when the file cannot be read; the channel's errors as they are.
    public func sendFile(
        _ handle: ReadFileHandle,
        from start: UInt64,
        to end: UInt64,
        on channel: any Channel,
        reserve: (_ remaining: UInt64) -> Int,
        release: (_ length: Int) -> Void,
        sentChunk: (_ length: Int, _ crc32: UInt32) -> Void
    ) async throws -> OutgoingTransfer {
        var transfer = OutgoingTransfer()
        let end = Int64(clamping: end)
        var offset = Int64(clamping: start)
        while offset < end {
            let reserved = max(1, reserve(UInt64(end - offset)))
            defer { release(reserved) }
            let chunk = try await Self.read(handle, at: offset, length: min(Int64(reserved), end - offset))
            guard chunk.readableBytes > 0 else { break }
            let current = DataChunk(chunk)
            offset += Int64(chunk.readableBytes)
            transfer.record(current)
            try await self.write(current)
            try await Self.awaitWritten(on: channel)
            sentChunk(current.bytes.readableBytes, current.crc32)
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
    /// A file that shrinks below the pieces' end ends the transfer: before a piece is queued, with
    /// ``FileReadError``; once pieces are queued, by closing the connection (SPEC.md §7.2), since NIO's `sendfile`
    /// would otherwise find nothing to send and retry at once, spinning a core until the peer gave up. The size
    /// (`currentSize`) is checked before each piece and every ``shrinkCheckInterval`` while the transfer runs; it
    /// must not use `handle`, which NIO holds while it sends and refuses to share (`EBUSY`).
    ///
    /// Cancellation (the end of a shutdown's grace period) closes the connection: the wait for a slow reader to take
    /// what is queued is not left to run on.
    ///
    /// - Throws: ``FileReadError`` if the file is shorter than a piece; the channel's errors as they are.
    public func sendFile(
        _ handle: NIOFileHandle,
        pieces: [ChecksummedPiece],
        on channel: any Channel,
        currentSize: @escaping @Sendable () -> Int64
    ) async throws -> OutgoingTransfer {
        let end = pieces.last.map { Int64($0.offset) + Int64($0.length) } ?? 0
        return try await withThrowingTaskGroup(of: Void.self) { watch in
            watch.addTask {
                while true {
                    try await Task.sleep(for: Self.shrinkCheckInterval)
                    if currentSize() < end {
                        channel.close(promise: nil)
                        return
                    }
                }
            }
            defer { watch.cancelAll() }
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
    }

    /// How often a file being sent with `sendfile` is checked for having shrunk.
    public static let shrinkCheckInterval = Duration.milliseconds(100)

    /// Returns once every write queued so far has completed, or throws once one has failed. The outbound writer
    /// hands each write to the event loop before its `write` returns, and the event loop runs writes in order, so
    /// an empty write made now completes after all of them. Cancelled, it closes the channel, which fails the
    /// writes still queued.
    static func awaitWritten(on channel: any Channel) async throws {
        let written: EventLoopFuture<Void> = channel.writeAndFlush(IOData.byteBuffer(ByteBuffer()))
        try await withTaskCancellationHandler {
            try await written.get()
        } onCancel: {
            channel.close(promise: nil)
        }
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

    public init(underlying: any Error) {
        self.underlying = underlying
    }

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
