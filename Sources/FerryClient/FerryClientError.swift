public import FerryProtocol
public import FerryTLS
import FerryTransport

/// Everything that can go wrong for a client, each with the sentence a person should read.
public enum FerryClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No connection could be made.
    case unreachable(server: String, reason: String)
    /// The peer answered, but not in Ferry.
    case notAFerryServer(server: String)
    /// The server refused the request, or the connection (busy, shutting down). `reply.code` says which.
    case refused(ErrorReply)
    /// The connection broke before the operation finished.
    case connectionLost(String)
    /// The server broke the protocol; the connection was closed.
    case protocolViolation(String)
    /// A name that no Ferry server accepts, refused before sending it.
    case invalidName(name: String, rule: FileName.Violation)
    /// A problem with a local file: missing, unreadable, or in the way.
    case localFile(String)
    /// The data received did not match the length or CRC-32 the server declared; nothing was kept.
    case verificationFailed(String)
    /// The server cannot do what was asked: its protocol version lacks the operation.
    case unsupportedByServer(String)
    /// The server lets only clients that log in do anything, and no user was given.
    case loginRequired(server: String)
    /// A password would have crossed the network unencrypted; it was not sent.
    case passwordInClear(server: String)
    /// A resumed download's kept part did not combine with the rest into the server's whole file (its whole-file
    /// CRC-32): nothing was published, and the kept part was removed, so the next attempt starts from the beginning.
    case keptPartMismatch(name: String)
    /// A resumed upload's whole-file CRC-32 did not match what the server kept and received: the server stored
    /// nothing and dropped what it kept, so the next attempt starts from the beginning.
    case keptUploadMismatch(name: String)
    /// The server's TLS certificate was refused; nothing was sent.
    case untrustedServer(TrustFailure)
    /// A TLS client met a server that speaks Ferry without TLS.
    case tlsNotSpoken(server: String)
    /// A client without TLS met a server that speaks Ferry inside TLS only (212).
    case tlsRequired(server: String)
    /// The server's listing went past the client's limit on entries (or on their names' bytes): it was dropped and
    /// the connection closed.
    case listingTooLarge(limit: Int)

    public var description: String {
        switch self {
        case .unreachable(let server, let reason):
            localized("server unreachable: cannot connect to %@ (%@)", server, reason)
        case .notAFerryServer(let server):
            localized("%@ is not a Ferry server (it did not answer the Ferry handshake)", server)
        case .refused(let reply):
            Self.describe(reply)
        case .connectionLost(let detail):
            localized("connection lost: %@", detail)
        case .protocolViolation(let detail):
            localized("the server broke the protocol: %@", detail)
        case .invalidName(let name, let rule):
            localized("invalid name '%@': %@", name, "\(rule)")
        case .localFile(let detail):
            detail
        case .verificationFailed(let detail):
            localized("checksum mismatch: %@; nothing was kept", detail)
        case .unsupportedByServer(let detail):
            detail
        case .loginRequired(let server):
            localized("%@ requires a log-in: give --user NAME", server)
        case .passwordInClear(let server):
            localized(
                "not sending a password to %@ unencrypted, where anyone on the way can read it (--insecure-password sends it anyway)",
                server
            )
        case .keptPartMismatch(let name):
            localized(
                "checksum mismatch: the part of '%@' kept from an earlier attempt does not match the server's file; nothing was kept, and the next attempt starts from the beginning",
                name
            )
        case .keptUploadMismatch(let name):
            localized(
                "checksum mismatch: the part of '%@' the server kept from an earlier attempt does not match this file; nothing was stored, and the next attempt starts from the beginning",
                name
            )
        case .untrustedServer(let failure):
            failure.description
        case .tlsNotSpoken(let server):
            localized(
                "%@ speaks Ferry without TLS: leave out --tls, --ca and --pin (or ask its operator for TLS)",
                server
            )
        case .tlsRequired(let server):
            localized("%@ speaks Ferry inside TLS only: connect with --tls", server)
        case .listingTooLarge(let limit):
            localized(
                "the listing is larger than this client takes (%@ entries, %@ MiB of names; raise it with --max-entries): nothing was kept",
                "\(limit)",
                "\(FerryConnection.maximumListingNameBytes >> 20)"
            )
        }
    }

    /// A server's refusal: its own message, which is English (SPEC.md §8: messages are for people, codes for
    /// programs), after what the code means in the user's language when that is not English, as the teaching
    /// example's client said "文件不存在".
    private static func describe(_ reply: ErrorReply) -> String {
        let message = reply.message.isEmpty ? reply.code.name : reply.message
        guard Localization.language != "en" else { return message }
        let meaning = localized(reply.code.name)
        return meaning == reply.code.name ? message : localized("%@ (the server says: %@)", meaning, message)
    }

    /// The server's error code, when the server refused.
    public var errorCode: ErrorCode? {
        if case .refused(let reply) = self { reply.code } else { nil }
    }
}
