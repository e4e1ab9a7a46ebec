/// The one-byte type at the start of every frame.
///
/// Types `0x00`–`0x7F` are *critical*: a receiver that does not know one must treat the frame as a protocol
/// violation. Types `0x80`–`0xFF` are *optional*: a receiver that does not know one checks its CRC and then
/// skips it. This lets later versions add advisory frames (progress hints, say) that older peers can ignore,
/// while a frame whose meaning matters can never be silently dropped.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    // MARK: - Handshake
    public static let hello = FrameType(rawValue: 0x01)

    // MARK: - Requests (client to server)
    public static let list = FrameType(rawValue: 0x10)
    public static let retrieve = FrameType(rawValue: 0x11)
    public static let store = FrameType(rawValue: 0x12)
    public static let exit = FrameType(rawValue: 0x13)
    /// Version 2.
    public static let delete = FrameType(rawValue: 0x14)
    /// Version 2.
    public static let rename = FrameType(rawValue: 0x15)
    /// Version 2.
    public static let auth = FrameType(rawValue: 0x16)

    // MARK: - Replies (server to client)
    public static let ok = FrameType(rawValue: 0x20)
    public static let error = FrameType(rawValue: 0x21)
    public static let listEntries = FrameType(rawValue: 0x22)
    public static let listEnd = FrameType(rawValue: 0x23)
    public static let fileInfo = FrameType(rawValue: 0x24)
    public static let ready = FrameType(rawValue: 0x25)

    // MARK: - File data (either direction)
    public static let data = FrameType(rawValue: 0x30)
    public static let end = FrameType(rawValue: 0x31)
    public static let abort = FrameType(rawValue: 0x32)

    /// Every type this implementation knows: version 1's, and version 2's DELETE and RENAME.
    /// (Version 2's come last: the fuzzers' seeds name a type by its place here.)
    public static let known: [FrameType] = [
        .hello, .list, .retrieve, .store, .exit, .ok, .error, .listEntries, .listEnd, .fileInfo, .ready, .data,
        .end, .abort, .delete, .rename, .auth,
    ]

    public var isKnown: Bool {
        Self.known.contains(self)
    }

    /// Whether a receiver that does not know this type skips it rather than failing the connection.
    public var isOptional: Bool {
        self.rawValue >= 0x80
    }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .list: "LIST"
        case .retrieve: "RETR"
        case .store: "STOR"
        case .exit: "EXIT"
        case .delete: "DELETE"
        case .rename: "RENAME"
        case .auth: "AUTH"
        case .ok: "OK"
        case .error: "ERROR"
        case .listEntries: "LIST_ENTRIES"
        case .listEnd: "LIST_END"
        case .fileInfo: "FILE_INFO"
        case .ready: "READY"
        case .data: "DATA"
        case .end: "END"
        case .abort: "ABORT"
        default: "0x" + String(self.rawValue, radix: 16, uppercase: true)
        }
    }
}
