public import NIOCore

/// One verified frame: its CRC has been checked, its payload not yet interpreted.
///
/// ```
/// offset  size  field
/// 0       1     type
/// 1       1     flags (none defined in version 1: sent as 0, ignored on receipt)
/// 2       8     payload length N, unsigned big-endian
/// 10      N     payload
/// 10+N    4     CRC-32 (zlib) of bytes 0 ..< 10+N, big-endian
/// ```
///
/// The payload's own CRC-32 travels with it, so a receiver can fold DATA payloads into a whole-file checksum
/// without reading the bytes a second time (see ``DataChunk``).
///
/// A large DATA frame that straddled reads keeps its payload in the pieces it arrived in (see ``FrameParser``):
/// ``payload`` then copies them together, and ``Message/init(decoding:)`` does not.
public struct Frame: Hashable, Sendable {
    public var type: FrameType
    public var flags: UInt8
    /// The payload with its CRC-32, in one piece or, for a DATA frame that straddled reads, several.
    private var body: DataChunk

    public init(type: FrameType, flags: UInt8 = 0, payload: ByteBuffer) {
        self.init(type: type, flags: flags, payload: payload, payloadCRC32: CRC32.checksum(payload))
    }

    /// For callers that have just computed the payload's checksum themselves.
    init(type: FrameType, flags: UInt8, payload: ByteBuffer, payloadCRC32: UInt32) {
        self.type = type
        self.flags = flags
        self.body = DataChunk(bytes: payload, crc32: payloadCRC32)
    }

    /// For a payload that arrived in `pieces`, in order, checked together.
    init(type: FrameType, flags: UInt8, pieces: [ByteBuffer], payloadCRC32: UInt32) {
        self.type = type
        self.flags = flags
        self.body = DataChunk(pieces: pieces, crc32: payloadCRC32)
    }

    /// The payload whole.
    public var payload: ByteBuffer {
        self.body.bytes
    }

    public var payloadLength: Int {
        self.body.length
    }

    /// The zlib CRC-32 of ``payload`` alone.
    public var payloadCRC32: UInt32 {
        self.body.crc32
    }

    /// A DATA frame's payload as it arrived, in one piece or several.
    var dataChunk: DataChunk {
        self.body
    }
}

/// The fixed parts of a frame's layout.
public enum FrameLayout {
    /// Type (1) + flags (1) + payload length (8).
    public static let headerLength = 10
    /// The CRC-32 that closes every frame.
    public static let trailerLength = 4
    /// Header and trailer together: what a frame costs beyond its payload.
    public static let overhead = headerLength + trailerLength
}
