import FerryProtocol
public import NIOCore

/// Socket settings server and client share, chosen for streaming large frames.
public enum ChannelTuning {
    /// NIO's default (32/64 KiB) is smaller than one DATA frame, so a sender would stop after every frame and
    /// wait for the socket to drain completely: keeping about two frames queued lets the next file read overlap
    /// the network write, while still bounding what a slow reader can make us hold.
    public static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(
        low: ProtocolLimits.defaultDataChunkLength,
        high: 2 * ProtocolLimits.defaultDataChunkLength
    )

    /// The client's: as ``writeBufferWaterMark``, but up to 8 MiB queued before a write waits. `put` keeps at most
    /// 4 MiB of small uploads written and unanswered (`FerryConnection.unansweredUploadLength`) and writes at most
    /// 512 KiB at a time, so none of those writes waits for the server to read: the client never waits for the
    /// server while the server's answers wait for it. (At 512 KiB, answers of a kilobyte to a few hundred refused
    /// uploads could fill both sides' buffers against a server that stops reading while it cannot write.) A bulk
    /// upload may so queue up to 8 MiB of its file; one client has one connection.
    public static let clientWriteBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(
        low: ProtocolLimits.defaultDataChunkLength,
        high: 8 << 20
    )

    /// Reads grow up to one bulk DATA frame (four ordinary ones) at a time when data streams in (NIO's adaptive
    /// default stops at 64 KiB), and start small: each connection keeps its last read buffer, and requests are a
    /// few hundred bytes. Starting at 2 KiB instead of 16 KiB, 200 connected clients cost ferryd 3.5 MiB less
    /// (19.2 against 22.8 MiB); a transfer's reads grow to full size within a few reads. Frames are used where they
    /// landed: a bulk DATA frame that straddles two full reads is held in those two (``FerryProtocol/FrameParser``).
    public static var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        Self.receiveAllocator(growingTo: ProtocolLimits.defaultMaximumFramePayload)
    }

    /// The client's reads grow to two bulk DATA frames: the fewer reads a download takes, the fewer frames straddle
    /// two of them (which were then copied to be made whole: 5 % of `ferry get`'s time in `perf` with reads of one
    /// frame, before ``FerryProtocol/FrameParser`` kept such frames in two pieces). A
    /// client has one connection, so the larger reads cost it about 8 MiB (peak RSS of `ferry get` of 1 GiB: 30 to
    /// 38 MiB) and gained about 6 % in download time (eight interleaved rounds: 0.95 to 0.90 s for 1 GiB on tmpfs,
    /// client CPU 1.10 to 1.03 s). Reads of four frames were no faster and took 46 MiB. The server keeps
    /// ``receiveAllocator``: it may hold hundreds of connections.
    public static var clientReceiveAllocator: AdaptiveRecvByteBufferAllocator {
        Self.receiveAllocator(growingTo: 2 * ProtocolLimits.defaultMaximumFramePayload)
    }

    /// How many reads a client holds one DATA frame in where they landed (``FerryProtocol/FrameParser``), before it
    /// copies the frame together. With its reads of up to two bulk frames, downloads' reads were 130 KB to 1.2 MB (851
    /// KB median in one `ferry get` of 1 GiB, 394 KB in another) and 30–55 % of the frames spanned three reads or more.
    /// Four instead of two: `memmove` 6.8 → 0.5 % of the samples, 1 GiB in 0.511 → 0.476 s and 0.610 → 0.556 s (two
    /// interleaved runs of 10 and 16 rounds, curl from vsftpd 0.453 and 0.565 s), peak RSS 26–39 MiB either way.
    public static let clientFramePieces = 4

    private static func receiveAllocator(growingTo maximum: Int) -> AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 2 * 1024, maximum: maximum)
    }

    /// How many reads a server connection makes each time its socket becomes readable (NIO's default is 4).
    ///
    /// Backpressure stops a connection's reads only between wake-ups, and each read may be as large as
    /// ``receiveAllocator`` allows, growing sixteenfold after each full one: four reads in one wake-up took 2 KiB,
    /// 32 KiB, 512 KiB and 1 MiB from a peer that had sent a megabyte, and held them all in the connection's stream
    /// while its reader waited for the frame budget (``FrameBudget``). A thousand such peers took a server to
    /// 1.5 GiB. One read per wake-up lets the stream's high watermark (two reads) hold.
    public static let readsPerWakeUp: UInt = 1

    /// How many reads a connection's async stream holds for its reader before it stops reading the socket. It
    /// counts reads, not bytes: with reads of up to 1 MiB, two in waiting keep a transfer streaming while one
    /// connection holds at most a few MiB, however slow its disk (NIO's usual eight would allow 8 MiB).
    public static let inboundBackPressure = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(
        lowWatermark: 1,
        highWatermark: 2
    )
}
