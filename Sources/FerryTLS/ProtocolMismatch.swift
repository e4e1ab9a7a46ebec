import FerryProtocol
public import NIOCore
import NIOSSL

/// Goes first in a TLS server's pipeline and looks at the first byte a client sends: a TLS record (`0x16`, a
/// handshake) passes on to TLS, and this handler leaves; anything else is a client that does not speak TLS, and
/// gets an answer it can read (SPEC.md §4.1) instead of a TLS alert it would report as noise.
///
/// A Ferry client (its first byte is the magic's `0x89`) gets the magic and an ERROR 212 frame, which every Ferry
/// client shows as a sentence; anything else gets the same as one line of text. Then the server closes its side
/// and drops whatever else comes, until the connection closes or ``lingerTimeout`` passes.
public final class PlainClientRefuser: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let lingerTimeout: TimeAmount
    private let onRefusal: @Sendable () -> Void
    private var refused = false

    /// - Parameter onRefusal: called once a plain client has been answered (to log it).
    public init(lingerTimeout: TimeAmount, onRefusal: @escaping @Sendable () -> Void = {}) {
        self.lingerTimeout = lingerTimeout
        self.onRefusal = onRefusal
    }

    /// The first byte of every TLS connection: a handshake record.
    static let tlsHandshakeRecord: UInt8 = 0x16

    public static let explanation =
        "this server speaks Ferry inside TLS only: connect with TLS (ferry --tls)"

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refused else { return }
        let bytes = self.unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        guard first != Self.tlsHandshakeRecord else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        self.refused = true
        var answer = context.channel.allocator.buffer(capacity: 128)
        if first == Handshake.magic[0] {
            answer.writeBytes(Handshake.magic)
            FrameSerializer.serialize(
                .error(ErrorReply(code: .tlsRequired, message: Self.explanation)),
                into: &answer
            )
        } else {
            answer.writeString("FERRY \(ErrorCode.tlsRequired.rawValue) \(Self.explanation)\r\n")
        }
        // Written from here, the answer goes straight to the socket: TLS comes after this handler.
        context.writeAndFlush(self.wrapOutboundOut(answer), promise: nil)
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: self.lingerTimeout) { channel.close(promise: nil) }
        self.onRefusal()
    }
}

/// Goes first in a TLS client's pipeline and notes whether the server's first bytes are Ferry in the clear (the
/// magic, or the text line a plain server sends to a stranger): then TLS fails, and the client can say why in a
/// sentence instead of reporting a TLS error.
final class PlainServerDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let verifier: ServerVerifier

    init(verifier: ServerVerifier) {
        self.verifier = verifier
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        if first == Handshake.magic[0] || bytes.readableBytesView.starts(with: "FERRY ".utf8) {
            self.verifier.notePlainFerryPeer()
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Short, readable accounts of TLS's errors, for log lines and messages: BoringSSL's carry error numbers and source
/// paths a person does not need.
public enum TLSFailure {
    /// The sentence for `error` if it is a TLS error; `nil` otherwise.
    public static func describe(_ error: any Error) -> String? {
        guard let error = error as? NIOSSLError else { return nil }
        switch error {
        case .handshakeFailed(let reason):
            return "TLS handshake failed (\(Self.describe(reason)))"
        case .uncleanShutdown:
            return "the peer closed the connection without ending TLS"
        default:
            return "TLS failed (\(error))"
        }
    }

    private static func describe(_ error: BoringSSLError) -> String {
        guard case .sslError(let stack) = error, let first = stack.first else { return "\(error)" }
        var text = "\(first)"
        if let reason = text.range(of: "OPENSSL_internal:") {
            text = String(text[reason.upperBound...])
        } else if text.hasPrefix("Error:") {
            text = String(text.dropFirst("Error:".count))
        }
        if let location = text.range(of: " at ") {
            text = String(text[..<location.lowerBound])
        }
        return String(text.trimmingWhitespace.lowercased().map { $0 == "_" ? " " : $0 })
    }
}
