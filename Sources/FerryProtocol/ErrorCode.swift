/// The stable numeric code in an ERROR frame.
///
/// Codes `100`–`199` are request errors: the request failed and the connection stays usable. Codes
/// `200`–`299` are connection errors: the sender closes the connection after the ERROR frame. A receiver
/// that meets an unknown code applies the rule of its range, so new codes can be added without breaking
/// older clients.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    public init(rawValue: UInt16) {
        self.rawValue = rawValue
    }

    // MARK: - Request errors: the connection continues
    /// RETR named a file that does not exist.
    public static let noSuchFile = ErrorCode(rawValue: 100)
    /// STOR named a file that exists and did not ask to overwrite, or lost a race for a new name.
    public static let fileExists = ErrorCode(rawValue: 101)
    /// The name breaks a naming rule; the message names the rule.
    public static let invalidName = ErrorCode(rawValue: 102)
    /// STOR announced more bytes than the server's maximum file size.
    public static let fileTooLarge = ErrorCode(rawValue: 103)
    /// The received bytes' CRC-32, or the whole file's, differs from END's; nothing was committed.
    public static let checksumMismatch = ErrorCode(rawValue: 104)
    /// STOR's data did not match the size it announced; nothing was committed.
    public static let lengthMismatch = ErrorCode(rawValue: 105)
    /// The sender abandoned the transfer with ABORT; nothing was committed.
    public static let aborted = ErrorCode(rawValue: 106)
    /// The server's storage failed (disk full, permission, I/O error).
    public static let storageFailure = ErrorCode(rawValue: 107)
    /// The request asks for something this server does not do (an unknown STOR option, a STOR offset without a token).
    public static let unsupported = ErrorCode(rawValue: 108)
    /// A RETR offset beyond the end of the file.
    public static let invalidOffset = ErrorCode(rawValue: 109)
    /// Version 2: the server does not let this client do that (an anonymous client of a read-only server, say).
    public static let permissionDenied = ErrorCode(rawValue: 110)
    /// Version 2: AUTH named an account that does not exist or gave the wrong password (which of the two, the
    /// server does not say).
    public static let authenticationFailed = ErrorCode(rawValue: 111)
    /// Version 4: the upload a STOR's token names is being received on another connection right now (the one that
    /// was cut may not have been noticed yet). Worth trying again shortly.
    public static let uploadInProgress = ErrorCode(rawValue: 112)

    // MARK: - Connection errors: the sender closes the connection
    /// The first bytes were not Ferry's magic. Sent as a line of text, not as a frame.
    public static let notFerry = ErrorCode(rawValue: 200)
    /// The two sides' version ranges do not overlap.
    public static let versionMismatch = ErrorCode(rawValue: 201)
    /// HELLO was missing, malformed, or announced impossible limits.
    public static let badHandshake = ErrorCode(rawValue: 202)
    /// A frame's CRC-32 did not match.
    public static let badChecksum = ErrorCode(rawValue: 203)
    /// A frame declared a payload longer than the receiver accepts.
    public static let frameTooLarge = ErrorCode(rawValue: 204)
    /// A critical frame type (`0x00`–`0x7F`) the receiver does not know.
    public static let unknownFrameType = ErrorCode(rawValue: 205)
    /// A frame's payload did not have the layout its type requires.
    public static let malformedFrame = ErrorCode(rawValue: 206)
    /// A frame that is not allowed in the connection's current state.
    public static let unexpectedFrame = ErrorCode(rawValue: 207)
    /// The server has as many connections as it accepts.
    public static let serverBusy = ErrorCode(rawValue: 208)
    /// The connection was idle, or stalled inside a frame, for longer than the server allows.
    public static let idleTimeout = ErrorCode(rawValue: 209)
    /// The server is shutting down.
    public static let shuttingDown = ErrorCode(rawValue: 210)
    /// Version 2: too many failed AUTHs on one connection.
    public static let tooManyFailedLogins = ErrorCode(rawValue: 211)
    /// The server speaks Ferry inside TLS only, and the client began without it (SPEC.md §4.1). Sent in the clear.
    public static let tlsRequired = ErrorCode(rawValue: 212)

    /// Whether the sender closes the connection after an ERROR with this code.
    public var closesConnection: Bool {
        self.rawValue >= 200
    }

    public var name: String {
        switch self {
        case .noSuchFile: "no such file"
        case .fileExists: "file exists"
        case .invalidName: "invalid name"
        case .fileTooLarge: "file too large"
        case .checksumMismatch: "checksum mismatch"
        case .lengthMismatch: "length mismatch"
        case .aborted: "aborted"
        case .storageFailure: "storage failure"
        case .unsupported: "unsupported"
        case .invalidOffset: "invalid offset"
        case .permissionDenied: "permission denied"
        case .authenticationFailed: "authentication failed"
        case .uploadInProgress: "upload in progress"
        case .notFerry: "not a Ferry peer"
        case .versionMismatch: "version mismatch"
        case .badHandshake: "bad handshake"
        case .badChecksum: "bad checksum"
        case .frameTooLarge: "frame too large"
        case .unknownFrameType: "unknown frame type"
        case .malformedFrame: "malformed frame"
        case .unexpectedFrame: "unexpected frame"
        case .serverBusy: "server busy"
        case .idleTimeout: "idle timeout"
        case .shuttingDown: "shutting down"
        case .tooManyFailedLogins: "too many failed log-ins"
        case .tlsRequired: "TLS required"
        default: self.closesConnection ? "connection error" : "request error"
        }
    }

    public var description: String {
        "\(self.rawValue) (\(self.name))"
    }
}
