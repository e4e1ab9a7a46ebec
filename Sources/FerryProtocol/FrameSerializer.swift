public import NIOCore

/// Writes messages as frames (SPEC.md §3).
///
/// Small messages are written into the caller's buffer with the length back-filled and the CRC computed over
/// the frame's bytes in one pass. DATA payloads are large and have their CRC already (``DataChunk``), so the
/// frame's CRC is *combined* from the header's and the payload's, and ``dataFrameEnvelope(for:allocator:)``
/// lets a sender hand the payload to the socket without copying it at all.
public enum FrameSerializer {
    /// Appends `message` as one complete frame. A DATA payload is copied once, into `buffer`.
    public static func serialize(_ message: Message, into buffer: inout ByteBuffer) {
        if case .data(let chunk) = message {
            Self.writeHeader(type: .data, payloadLength: chunk.length, into: &buffer)
            let headerCRC = Self.headerCRC(buffer)
            chunk.forEachPiece { buffer.writeImmutableBuffer($0) }
            let payloadLength = UInt64(chunk.length)
            buffer.writeInteger(CRC32.combine(headerCRC, chunk.crc32, secondLength: payloadLength))
            return
        }
        let start = buffer.writerIndex
        Self.writeHeader(type: message.frameType, payloadLength: 0, into: &buffer)
        message.writePayload(into: &buffer)
        let payloadLength = buffer.writerIndex - start - FrameLayout.headerLength
        buffer.setInteger(UInt64(payloadLength), at: start + 2)
        let frameStart = start - buffer.readerIndex
        let crc = buffer.withUnsafeReadableBytes { bytes in
            var crc = CRC32()
            crc.update(UnsafeRawBufferPointer(rebasing: bytes[frameStart...]))
            return crc.value
        }
        buffer.writeInteger(crc)
    }

    /// Appends `frame` as it is, flags included: for tests and tools that build frames by hand.
    public static func serialize(_ frame: Frame, into buffer: inout ByteBuffer) {
        Self.writeHeader(
            type: frame.type,
            flags: frame.flags,
            payloadLength: frame.payloadLength,
            into: &buffer
        )
        let headerCRC = Self.headerCRC(buffer)
        buffer.writeImmutableBuffer(frame.payload)
        let crc = CRC32.combine(headerCRC, frame.payloadCRC32, secondLength: UInt64(frame.payloadLength))
        buffer.writeInteger(crc)
    }

    /// The header and trailer that make `chunk` a DATA frame: write `header`, `chunk.bytes`, `trailer` in
    /// that order (a vectored write) and the payload is never copied.
    public static func dataFrameEnvelope(
        for chunk: DataChunk,
        allocator: ByteBufferAllocator
    ) -> (header: ByteBuffer, trailer: ByteBuffer) {
        Self.dataFrameEnvelope(
            payloadLength: chunk.length,
            payloadCRC32: chunk.crc32,
            allocator: allocator
        )
    }

    /// The header and trailer of a DATA frame whose payload is known only by its length and CRC-32: a payload
    /// that goes from a file to the socket without passing through memory (`sendfile`).
    public static func dataFrameEnvelope(
        payloadLength: Int,
        payloadCRC32: UInt32,
        allocator: ByteBufferAllocator
    ) -> (header: ByteBuffer, trailer: ByteBuffer) {
        var header = allocator.buffer(capacity: FrameLayout.headerLength)
        Self.writeHeader(type: .data, payloadLength: payloadLength, into: &header)
        let headerCRC = Self.headerCRC(header)
        var trailer = allocator.buffer(capacity: FrameLayout.trailerLength)
        trailer.writeInteger(CRC32.combine(headerCRC, payloadCRC32, secondLength: UInt64(payloadLength)))
        return (header, trailer)
    }

    // MARK: - Parts

    private static func writeHeader(
        type: FrameType,
        flags: UInt8 = 0,
        payloadLength: Int,
        into buffer: inout ByteBuffer
    ) {
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt64(payloadLength))
    }

    /// The CRC of the header just written at the end of `buffer`.
    private static func headerCRC(_ buffer: ByteBuffer) -> UInt32 {
        buffer.withUnsafeReadableBytes { bytes in
            var crc = CRC32()
            crc.update(UnsafeRawBufferPointer(rebasing: bytes.suffix(FrameLayout.headerLength)))
            return crc.value
        }
    }
}
