public import FerryProtocol
public import NIOCore

/// Writes Ferry messages to a channel. Each call suspends while the channel is not writable, so a slow peer
/// slows the sender down instead of making it buffer.
public struct MessageWriter: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<IOData>
    let allocator: ByteBufferAllocator

    /// The largest frame payload the peer accepts: until its HELLO arrives, the minimum every peer accepts.
    public var peerMaximumPayloadLength = Int(ProtocolLimits.minimumFramePayload)

    public init(
        _ outbound: NIOAsyncChannelOutboundWriter<IOData>,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) {
        self.outbound = outbound
        self.allocator = allocator
    }

    /// The DATA payload size to use: the implementation's chunk size, capped by the peer's limit.
    public var dataChunkLength: Int {
        min(ProtocolLimits.defaultDataChunkLength, self.peerMaximumPayloadLength)
    }

    /// The DATA payload size for a transfer of `length` bytes: larger for bulk transfers, within the peer's limit.
    public func dataChunkLength(forTransferOf length: UInt64) -> Int {
        let preferred =
            length >= ProtocolLimits.bulkTransferThreshold
            ? ProtocolLimits.bulkDataChunkLength : ProtocolLimits.defaultDataChunkLength
        return min(preferred, self.peerMaximumPayloadLength)
    }

    /// The chunk size a server sending many files at once falls back to: with a thousand clients downloading,
    /// 64 KiB chunks keep a server within tens of MiB where 1 MiB ones would need a gigabyte, and the CPU, not the
    /// chunk size, then sets the pace.
    public static let crowdedDataChunkLength = 64 * 1024

    public func writeMagic(then message: Message) async throws {
        try await self.writeMagic(then: [message])
    }

    /// The magic, then `messages`, in one write: a greeting and the requests pipelined behind it.
    public func writeMagic(then messages: [Message]) async throws {
        var buffer = self.allocator.buffer(capacity: 64)
        buffer.writeBytes(Handshake.magic)
        for message in messages {
            FrameSerializer.serialize(message, into: &buffer)
        }
        try await self.outbound.write(.byteBuffer(buffer))
    }

    public func write(_ message: Message) async throws {
        if case .data(let chunk) = message {
            try await self.write(chunk)
            return
        }
        var buffer = self.allocator.buffer(capacity: 64)
        FrameSerializer.serialize(message, into: &buffer)
        try await self.outbound.write(.byteBuffer(buffer))
    }

    /// Writes several messages with one flush.
    public func write(_ messages: [Message]) async throws {
        var buffer = self.allocator.buffer(capacity: 256)
        for message in messages {
            FrameSerializer.serialize(message, into: &buffer)
        }
        try await self.outbound.write(.byteBuffer(buffer))
    }

    /// Writes one DATA frame without copying its payload: header, payload and trailer go out as one vectored
    /// write.
    public func write(_ chunk: DataChunk) async throws {
        let (header, trailer) = FrameSerializer.dataFrameEnvelope(for: chunk, allocator: self.allocator)
        var parts: [IOData] = [.byteBuffer(header)]
        chunk.forEachPiece { parts.append(.byteBuffer($0)) }
        parts.append(.byteBuffer(trailer))
        try await self.outbound.write(contentsOf: parts)
    }

    /// Writes raw bytes: the text line a server sends to a peer that is not speaking Ferry.
    public func writeRaw(_ bytes: ByteBuffer) async throws {
        try await self.outbound.write(.byteBuffer(bytes))
    }

    /// Closes the write side (TCP FIN) while still reading: the last message is delivered, not reset.
    public func finish() {
        self.outbound.finish()
    }
}
