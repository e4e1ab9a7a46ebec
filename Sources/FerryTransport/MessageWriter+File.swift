public import FerryProtocol
import NIOCore
public import _NIOFileSystem

extension MessageWriter {
    /// Sends bytes `start ..< end` of an open file as DATA frames, reading the next chunk while the current one
    /// is written, and returns the account of what was sent (for END).
    ///
    /// Exactly one chunk is read ahead, so a slow peer holds the server to about two chunks plus the socket's
    /// write buffer, whatever the file's size (``dataChunkLength(forTransferOf:alongside:)`` by default). A file that ends early (it shrank while being sent) ends the
    /// stream early: the caller sees `sentLength` short of `end - start`.
    ///
    /// - Throws: ``FileReadError`` when the file cannot be read; the channel's errors as they are.
    public func sendFile(
        _ handle: ReadFileHandle,
        from start: UInt64,
        to end: UInt64,
        chunkLength: Int? = nil,
        progress: (UInt64) -> Void = { _ in }
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
            progress(transfer.sentLength)
            next = try await following
        }
        return transfer
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
