public import NIOCore

/// How a connection opens (SPEC.md §4): each side sends the 8-byte magic, then a HELLO frame.
///
/// The client speaks first. The server checks the magic byte by byte as it arrives, so an HTTP request, the
/// old text protocol's `LIST`, or noise is recognised within its first bytes and answered with one line of
/// text (``notFerryReply``) that a person running `nc` can read. The server never buffers more than the
/// 8 bytes of magic from a stranger.
public enum Handshake {
    /// `\x89 F E R R Y \r \n`. The high byte catches 7-bit channels and, being no ASCII letter, every text
    /// protocol; the CR LF catches line-ending translation, as PNG's signature does.
    public static let magic: [UInt8] = [0x89, 0x46, 0x45, 0x52, 0x52, 0x59, 0x0D, 0x0A]

    /// The versions this implementation speaks: 1; 2, which adds DELETE, RENAME, AUTH and "permission denied"; 3,
    /// which adds resumed downloads proven whole (RETR's condition, END's whole-file CRC); and 4, which adds resumed
    /// uploads proven whole (READY's token, STOR's token, the client's whole-file CRC at END).
    public static let supportedVersions: ClosedRange<UInt16> = 1...4

    /// The first version with DELETE and RENAME.
    public static let deleteAndRenameVersion: UInt16 = 2

    /// The first version with RETR's `if_unchanged` condition and END's `file_crc` (SPEC.md §7.2).
    public static let resumeVersion: UInt16 = 3

    /// The first version with resumable uploads: READY's and STOR's token, and a client's END with `file_crc`
    /// (SPEC.md §7.3).
    public static let resumableUploadVersion: UInt16 = 4

    /// What a server sends, as plain text, to a peer whose first bytes are not the magic; then it closes.
    public static let notFerryReply =
        "FERRY 200 not a Ferry client: this port speaks the binary Ferry protocol, version 1 (see SPEC.md)\r\n"

    /// The version both sides use: the newest both speak. Each side computes it from the two HELLOs alone,
    /// so negotiation costs no round trip.
    public static func negotiateVersion(local: Hello, remote: Hello) throws(FerryProtocolError) -> UInt16 {
        guard remote.minimumVersion <= remote.maximumVersion else {
            throw FerryProtocolError(
                .badHandshake,
                "HELLO's version range \(remote.minimumVersion)...\(remote.maximumVersion) is empty"
            )
        }
        let newest = min(local.maximumVersion, remote.maximumVersion)
        let oldest = max(local.minimumVersion, remote.minimumVersion)
        guard oldest <= newest else {
            throw FerryProtocolError(
                .versionMismatch,
                "peer speaks versions \(remote.minimumVersion)...\(remote.maximumVersion), "
                    + "this side \(local.minimumVersion)...\(local.maximumVersion)"
            )
        }
        return newest
    }

    /// Checks a peer's HELLO for limits no conforming peer announces.
    public static func validate(_ hello: Hello) throws(FerryProtocolError) {
        guard hello.maximumFramePayload >= ProtocolLimits.minimumFramePayload else {
            throw FerryProtocolError(
                .badHandshake,
                "HELLO announces a \(hello.maximumFramePayload)-byte frame limit; at least "
                    + "\(ProtocolLimits.minimumFramePayload) is required"
            )
        }
    }
}

/// Recognises the magic incrementally: a mismatch is reported at the first wrong byte.
public struct MagicMatcher: Sendable {
    private var matched = 0

    public init() {}

    public enum Outcome: Hashable, Sendable {
        /// All 8 bytes matched; the buffer's reader index is just past them.
        case matched
        /// So far so good; more bytes are needed.
        case needMoreBytes
        /// A byte differed: this is not a Ferry peer.
        case mismatch
    }

    public var isComplete: Bool {
        self.matched == Handshake.magic.count
    }

    /// Consumes up to the rest of the magic from `buffer`, leaving anything after it unread.
    public mutating func consume(_ buffer: inout ByteBuffer) -> Outcome {
        while self.matched < Handshake.magic.count {
            guard let byte = buffer.readInteger(as: UInt8.self) else {
                return .needMoreBytes
            }
            guard byte == Handshake.magic[self.matched] else {
                return .mismatch
            }
            self.matched += 1
        }
        return .matched
    }
}
