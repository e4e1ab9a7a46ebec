/// The limits every Ferry peer shares, and the defaults this implementation announces.
///
/// A limit that protects a receiver is checked *before* the bytes it governs are buffered, so a hostile or
/// corrupted length costs the receiver nothing.
public enum ProtocolLimits {
    /// Every peer accepts frame payloads at least this large; a HELLO that announces less is refused.
    /// It lets a client send its first requests without waiting for the server's limits.
    public static let minimumFramePayload: UInt64 = 64 * 1024

    /// The largest payload a peer accepts before the other side's HELLO has been read: HELLO itself, or an
    /// ERROR sent instead of it.
    public static let handshakeFramePayload = 4 * 1024

    /// What this implementation announces as the largest frame payload it accepts.
    public static let defaultMaximumFramePayload = 1024 * 1024

    /// The payload size this implementation puts in each DATA frame (capped by the peer's limit).
    public static let defaultDataChunkLength = 256 * 1024

    /// The DATA payload size for files of at least ``bulkTransferThreshold`` bytes: four times fewer frames,
    /// thread hops and wake-ups per byte where they add up, while small and medium files (many at once, say)
    /// keep the smaller chunk and the smaller buffers.
    ///
    /// The whole frame, header and CRC included, is exactly 1 MiB: NIO rounds every buffer up to a power of two,
    /// so a receiver reassembling a frame of a 1 MiB payload would hold 2 MiB for it.
    public static let bulkDataChunkLength = 1024 * 1024 - FrameLayout.overhead
    public static let bulkTransferThreshold: UInt64 = 16 * 1024 * 1024

    /// The longest valid file name, in UTF-8 bytes.
    public static let maximumNameLength = 255

    /// The longest user name or password AUTH carries (version 2), in UTF-8 bytes.
    public static let maximumCredentialLength = 1024

    /// The longest human-readable ERROR message a sender produces; longer ones are cut at a character
    /// boundary. Receivers accept whatever fits the frame.
    public static let maximumErrorMessageLength = 1024
}
