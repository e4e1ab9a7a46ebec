public import NIOCore

/// Everything a Ferry peer can say, one case per frame type (SPEC.md §5).
///
/// Requests flow from client to server, replies from server to client; DATA, END and ABORT flow in whichever
/// direction a file is moving. Which messages are allowed when is the business of the connection state
/// machines, not of this type.
public enum Message: Hashable, Sendable {
    // Handshake
    case hello(Hello)
    // Requests
    case list
    case retrieve(RetrieveRequest)
    case store(StoreRequest)
    case exit
    /// Version 2.
    case delete(DeleteRequest)
    /// Version 2.
    case rename(RenameRequest)
    /// Version 2.
    case auth(AuthRequest)
    // Replies
    case ok
    case error(ErrorReply)
    case listEntries([ListEntry])
    case listEnd(ListEnd)
    case fileInfo(FileInfo)
    case ready(Ready)
    // File data
    case data(DataChunk)
    case end(EndOfData)
    case abort

    public var frameType: FrameType {
        switch self {
        case .hello: .hello
        case .list: .list
        case .retrieve: .retrieve
        case .store: .store
        case .exit: .exit
        case .delete: .delete
        case .rename: .rename
        case .auth: .auth
        case .ok: .ok
        case .error: .error
        case .listEntries: .listEntries
        case .listEnd: .listEnd
        case .fileInfo: .fileInfo
        case .ready: .ready
        case .data: .data
        case .end: .end
        case .abort: .abort
        }
    }
}

// MARK: - Payloads

/// The first frame each side sends, right after the magic (SPEC.md §4).
public struct Hello: Hashable, Sendable {
    /// The oldest and newest protocol versions the sender speaks.
    public var minimumVersion: UInt16
    public var maximumVersion: UInt16
    /// The largest frame payload the sender accepts; at least ``ProtocolLimits/minimumFramePayload``.
    public var maximumFramePayload: UInt64
    /// The largest file the sender accepts (a server: in STOR; a client: in RETR). `UInt64.max` for none.
    public var maximumFileSize: UInt64
    /// Version 2, a server's only: whether clients may log in (AUTH), and whether they must. A field appended to
    /// version 1's HELLO, and omitted when it is ``LoginPolicy/none``, so a version 1 HELLO reads as `none`.
    public var login: LoginPolicy

    public init(
        minimumVersion: UInt16,
        maximumVersion: UInt16,
        maximumFramePayload: UInt64,
        maximumFileSize: UInt64,
        login: LoginPolicy = .none
    ) {
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.maximumFramePayload = maximumFramePayload
        self.maximumFileSize = maximumFileSize
        self.login = login
    }
}

/// What a server's HELLO says of logging in (version 2).
public struct LoginPolicy: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// The server has no accounts: AUTH is refused (108).
    public static let none = LoginPolicy(rawValue: 0)
    /// Clients may log in; without it they may do what the server lets anonymous clients do.
    public static let offered = LoginPolicy(rawValue: 1)
    /// Clients must log in (AUTH) before any other request.
    public static let required = LoginPolicy(rawValue: 2)

    public var description: String {
        switch self {
        case .none: "none"
        case .offered: "offered"
        case .required: "required"
        default: "login \(self.rawValue)"
        }
    }
}

/// AUTH (version 2): log in as `user` with `password`, once per connection, before other requests.
///
/// Its descriptions leave the password out, so that no log line or error message can carry it.
public struct AuthRequest: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "AUTH user=\(self.user) password=<\(self.password.utf8.count) bytes>" }
    public var debugDescription: String { self.description }

    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }
}

/// DELETE (version 2): remove this file from the library.
public struct DeleteRequest: Hashable, Sendable {
    public var name: String

    public init(name: String) {
        self.name = name
    }
}

/// RENAME (version 2): give the file `from` the name `to`, atomically; an existing `to` is replaced only with
/// ``RenameOptions/overwrite``.
public struct RenameRequest: Hashable, Sendable {
    public var from: String
    public var to: String
    public var options: RenameOptions

    public init(from: String, to: String, options: RenameOptions = []) {
        self.from = from
        self.to = to
        self.options = options
    }
}

/// RENAME's option bits.
public struct RenameOptions: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// Replace a file that already has the new name.
    public static let overwrite = RenameOptions(rawValue: 0x01)
    /// Every bit this version defines; a server refuses others (108).
    public static let known: RenameOptions = [.overwrite]
}

/// RETR: send me this file, starting at `offset` (0 for all of it; more to resume a download).
public struct RetrieveRequest: Hashable, Sendable {
    public var name: String
    public var offset: UInt64
    /// Version 3: send from `offset` only if the file is still this version, and the whole file otherwise (HTTP's
    /// If-Range): a client resuming a download names the version its partial file came from.
    public var ifUnchanged: FileVersion?

    public init(name: String, offset: UInt64 = 0, ifUnchanged: FileVersion? = nil) {
        self.name = name
        self.offset = offset
        self.ifUnchanged = ifUnchanged
    }
}

/// One version of a file as FILE_INFO describes it: its size and modification time.
public struct FileVersion: Hashable, Sendable {
    public var size: UInt64
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    public var modified: Int64

    public init(size: UInt64, modified: Int64) {
        self.size = size
        self.modified = modified
    }
}

/// STOR: I will send a file of `size` bytes under `name`.
public struct StoreRequest: Hashable, Sendable {
    public var name: String
    /// The whole file's size, announced so the server can refuse what it cannot hold before any data moves.
    public var size: UInt64
    /// Without a token, 0. With one (version 4), the furthest the client lets the server resume: READY's offset is at
    /// most this. `size` takes whatever the server kept; 0 starts the kept upload again from its first byte.
    public var offset: UInt64
    public var options: StoreOptions
    /// Version 4: resume the upload a READY named with this token, cut short before.
    public var resumeToken: UploadToken?

    public init(
        name: String,
        size: UInt64,
        offset: UInt64 = 0,
        options: StoreOptions = [],
        resumeToken: UploadToken? = nil
    ) {
        self.name = name
        self.size = size
        self.offset = offset
        self.options = options
        self.resumeToken = resumeToken
    }
}

/// Version 4: names an upload the server keeps when it is cut short, so that a later STOR resumes it (SPEC.md §7.3).
///
/// 16 random bytes from the server: whoever holds it may resume the upload, so it is a capability, bound by the server
/// to the file's name, size and the account that began it.
public struct UploadToken: Hashable, Sendable, CustomStringConvertible {
    public static let length = 16

    /// The token's bytes, big-endian halves.
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A fresh token from the system's secure random source.
    public static func random() -> UploadToken {
        var generator = SystemRandomNumberGenerator()
        return UploadToken(high: generator.next(), low: generator.next())
    }

    /// 32 lowercase hex digits.
    public var description: String {
        Self.hex(self.high) + Self.hex(self.low)
    }

    /// Reads 32 hex digits, as ``description`` writes them.
    public init?(hex: some StringProtocol) {
        guard hex.utf8.count == 32, let high = UInt64(hex.prefix(16), radix: 16),
            let low = UInt64(hex.dropFirst(16), radix: 16)
        else { return nil }
        self.init(high: high, low: low)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

public struct StoreOptions: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8

    public init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// Replace a file of the same name instead of failing with ``ErrorCode/fileExists``.
    public static let overwrite = StoreOptions(rawValue: 0x01)

    /// The bits version 1 defines; a server refuses a request carrying any other with ``ErrorCode/unsupported``.
    public static let known: StoreOptions = [.overwrite]
}

public struct ErrorReply: Hashable, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    /// For people, not programs: programs switch on ``code``.
    public var message: String

    public init(code: ErrorCode, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String {
        "error \(self.code.rawValue) (\(self.code.name)): \(self.message)"
    }
}

public struct ListEntry: Hashable, Sendable {
    public var name: String
    public var size: UInt64
    /// Last modification, in nanoseconds since 1970-01-01T00:00:00Z.
    public var modified: Int64

    public init(name: String, size: UInt64, modified: Int64) {
        self.name = name
        self.size = size
        self.modified = modified
    }
}

/// Closes a listing: how many entries the LIST_ENTRIES frames carried, so a receiver knows it has them all.
public struct ListEnd: Hashable, Sendable {
    public var count: UInt64

    public init(count: UInt64) {
        self.count = count
    }
}

/// RETR's go-ahead: the file exists and `size - offset` bytes follow as DATA.
public struct FileInfo: Hashable, Sendable {
    public var size: UInt64
    public var offset: UInt64
    /// Last modification, in nanoseconds since 1970-01-01T00:00:00Z.
    public var modified: Int64

    public init(size: UInt64, offset: UInt64 = 0, modified: Int64) {
        self.size = size
        self.offset = offset
        self.modified = modified
    }
}

/// STOR's go-ahead: send the data, starting at `offset`.
public struct Ready: Hashable, Sendable {
    /// 0, or, answering a STOR with a token (version 4), how many bytes of the file the server kept and verified.
    public var offset: UInt64
    /// Version 4: the server keeps this upload if it is cut short; a STOR with this token resumes it.
    public var token: UploadToken?

    public init(offset: UInt64 = 0, token: UploadToken? = nil) {
        self.offset = offset
        self.token = token
    }
}

/// Closes a transfer: the length and the CRC-32 of all the data sent in it, so the receiver verifies the
/// file as a whole, not only each frame.
public struct EndOfData: Hashable, Sendable {
    public var length: UInt64
    public var crc32: UInt32
    /// The CRC-32 of the whole file, from byte 0, whatever the transfer's offset: a server's END in version 3 and
    /// later, a client's in version 4. The receiver of a resumed transfer combines the kept part's CRC with `crc32`
    /// and compares: the file it publishes is proven whole.
    public var fileCRC32: UInt32?

    public init(length: UInt64, crc32: UInt32, fileCRC32: UInt32? = nil) {
        self.length = length
        self.crc32 = crc32
        self.fileCRC32 = fileCRC32
    }
}

/// The payload of one DATA frame with its CRC-32, computed once and used twice: for the frame's own check
/// and, through ``CRC32/combine(_:_:secondLength:)``, for the whole file's.
///
/// A received chunk may be in several pieces, where a frame straddled reads (``FrameParser``): file data is written
/// from them as they are (``forEachPiece(_:)``); ``bytes`` copies them together.
public struct DataChunk: Hashable, Sendable {
    private let head: ByteBuffer
    /// The pieces after ``head``, for a frame that straddled reads; empty otherwise.
    private let rest: ArraySlice<ByteBuffer>
    public let crc32: UInt32

    public init(_ bytes: ByteBuffer) {
        self.init(bytes: bytes, crc32: CRC32.checksum(bytes))
    }

    init(bytes: ByteBuffer, crc32: UInt32) {
        self.head = bytes
        self.rest = []
        self.crc32 = crc32
    }

    init(pieces: [ByteBuffer], crc32: UInt32) {
        self.head = pieces.first ?? ByteBuffer()
        self.rest = pieces.dropFirst()
        self.crc32 = crc32
    }

    /// The payload whole.
    public var bytes: ByteBuffer {
        guard !self.rest.isEmpty else { return self.head }
        var whole = ByteBufferAllocator().buffer(capacity: self.length)
        self.forEachPiece { whole.writeImmutableBuffer($0) }
        return whole
    }

    public var length: Int {
        self.rest.reduce(self.head.readableBytes) { $0 + $1.readableBytes }
    }

    /// Calls `body` with each piece of the payload, in order: one, or several for a frame that straddled reads.
    public func forEachPiece<Failure: Error>(_ body: (ByteBuffer) throws(Failure) -> Void) throws(Failure) {
        try body(self.head)
        for piece in self.rest {
            try body(piece)
        }
    }

    public static func == (lhs: DataChunk, rhs: DataChunk) -> Bool {
        lhs.crc32 == rhs.crc32 && lhs.bytes == rhs.bytes
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.crc32)
        hasher.combine(self.bytes)
    }
}
