/// Why bytes from a peer were refused.
///
/// One concrete error type, as in swift-nio-ssh: callers switch on the small ``Kind``, and the detail string
/// says what exactly was wrong for logs and for the ERROR frame's message.
public struct FerryProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case badMagic, badHandshake, versionMismatch, badChecksum, frameTooLarge, unknownFrameType
            case malformedPayload, unexpectedFrame, invalidName
        }

        private let base: Base

        /// The first bytes were not Ferry's magic.
        public static let badMagic = Kind(base: .badMagic)
        /// HELLO was missing, malformed or announced impossible limits.
        public static let badHandshake = Kind(base: .badHandshake)
        /// The peers' version ranges do not overlap.
        public static let versionMismatch = Kind(base: .versionMismatch)
        /// A frame's CRC-32 did not match its bytes.
        public static let badChecksum = Kind(base: .badChecksum)
        /// A frame declared a payload longer than the receiver's limit.
        public static let frameTooLarge = Kind(base: .frameTooLarge)
        /// A critical frame type the receiver does not know.
        public static let unknownFrameType = Kind(base: .unknownFrameType)
        /// A payload that does not have its type's layout.
        public static let malformedPayload = Kind(base: .malformedPayload)
        /// A frame not allowed in the current state.
        public static let unexpectedFrame = Kind(base: .unexpectedFrame)
        /// A well-formed request whose file name breaks a naming rule: a request error, not a connection
        /// error, because the frame itself was intact.
        public static let invalidName = Kind(base: .invalidName)

        public var description: String { String(describing: self.base) }
    }

    public var kind: Kind
    public var detail: String
    /// The type of the intact frame the error is about, when it is a request error (an invalid name): the
    /// server's answer depends on what was refused (a refused STOR's pipelined data is dropped).
    public var frameType: FrameType?

    public init(_ kind: Kind, _ detail: String, frameType: FrameType? = nil) {
        self.kind = kind
        self.detail = detail
        self.frameType = frameType
    }

    /// The code a peer reports this error with.
    public var errorCode: ErrorCode {
        switch self.kind {
        case .badMagic: .notFerry
        case .badHandshake: .badHandshake
        case .versionMismatch: .versionMismatch
        case .badChecksum: .badChecksum
        case .frameTooLarge: .frameTooLarge
        case .unknownFrameType: .unknownFrameType
        case .unexpectedFrame: .unexpectedFrame
        case .invalidName: .invalidName
        default: .malformedFrame
        }
    }

    public var description: String {
        "\(self.kind): \(self.detail)"
    }
}

// MARK: - Factories

extension FerryProtocolError {
    @inline(never)
    static func frameTooLarge(declared: UInt64, limit: Int) -> Self {
        Self(.frameTooLarge, "frame declares a \(declared)-byte payload; the limit is \(limit)")
    }

    @inline(never)
    static func badChecksum(type: UInt8, expected: UInt32, actual: UInt32) -> Self {
        Self(
            .badChecksum,
            "frame of type 0x\(String(type, radix: 16)) carries CRC-32 \(hex32(expected)) but its bytes give \(hex32(actual))"
        )
    }

    @inline(never)
    static func unknownFrameType(_ type: FrameType) -> Self {
        Self(.unknownFrameType, "unknown critical frame type \(type)")
    }

    @inline(never)
    public static func malformed(_ type: FrameType, _ why: String) -> Self {
        Self(.malformedPayload, "\(type) payload: \(why)")
    }

    @inline(never)
    public static func unexpected(_ type: FrameType, in state: String) -> Self {
        Self(.unexpectedFrame, "\(type) is not allowed \(state)")
    }
}

func hex32(_ value: UInt32) -> String {
    CRC32.hex(value)
}
