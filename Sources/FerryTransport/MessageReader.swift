public import FerryProtocol
public import NIOCore

/// Reads Ferry messages from a channel's inbound byte stream: the magic first, then frames.
///
/// It owns the stream's iterator, so exactly one task reads a connection. The frame limit starts at the
/// handshake limit and is raised once this side has announced its own.
public struct MessageReader {
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var parser: FrameParser
    private var magic = MagicMatcher()
    /// Bytes that arrived with the magic, to be parsed as frames.
    private var leftover: ByteBuffer?
    private let inputWait: InputWait?
    /// Where frames over ``FrameBudget/freeLength`` get their memory (a server's readers), and what the frame in
    /// progress holds of it.
    private let frameBudget: FrameBudget?
    private var reservation: FrameBudget.Reservation?
    /// How long a frame waits for room in ``frameBudget`` before the connection is given up as the server being busy.
    private let frameBudgetPatience: Duration

    /// - Parameters:
    ///   - inputWait: set while this reader waits for the peer, for the connection's idle timeout.
    ///   - frameBudget: if given, a frame larger than ``FrameBudget/freeLength`` is received only once its length
    ///     is reserved there, and must then arrive within the deadline ``InputWait`` keeps.
    ///   - maximumFramePieces: how many reads a large DATA frame may be held in where they landed
    ///     (``FrameParser/maximumPieces``).
    public init(
        _ inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
        inputWait: InputWait? = nil,
        frameBudget: FrameBudget? = nil,
        frameBudgetPatience: Duration = .seconds(60),
        maximumFramePieces: Int = 2
    ) {
        self.iterator = inbound.makeAsyncIterator()
        self.parser = FrameParser(
            maximumPayloadLength: ProtocolLimits.handshakeFramePayload,
            maximumPieces: maximumFramePieces
        )
        self.inputWait = inputWait
        self.frameBudget = frameBudget
        self.frameBudgetPatience = frameBudgetPatience
    }

    /// The next bytes from the peer, or `nil` once it has closed.
    private mutating func receive() async throws -> ByteBuffer? {
        self.inputWait?.begin()
        defer { self.inputWait?.end() }
        return try await self.iterator.next()
    }

    /// The largest frame payload accepted from the peer.
    public var maximumPayloadLength: Int {
        get { self.parser.maximumPayloadLength }
        set { self.parser.maximumPayloadLength = newValue }
    }

    /// Reads the peer's 8-byte magic, consuming no more than that. `false` at the first byte that differs.
    public mutating func readMagic() async throws -> Bool {
        var started = false
        while true {
            guard var bytes = try await self.receive() else {
                // Cut inside the magic, it was a Ferry peer's connection lost; closed before a byte, who knows.
                throw TransportError.connectionClosed(midFrame: started)
            }
            started = started || bytes.readableBytes > 0
            switch self.magic.consume(&bytes) {
            case .matched:
                self.leftover = bytes
                return true
            case .mismatch:
                return false
            case .needMoreBytes:
                continue
            }
        }
    }

    /// The next message, or `nil` when the peer closed the connection cleanly between frames.
    ///
    /// Throws ``FerryProtocolError`` for bytes that break the protocol (the connection must close, except for
    /// ``FerryProtocolError/Kind/invalidName``, whose frame was intact) and ``TransportError`` for a
    /// connection that closed inside a frame.
    public mutating func next() async throws -> Message? {
        do {
            return try await self.nextMessage()
        } catch {
            // The connection is over: what its frame in progress reserved goes back at once, not at its close.
            self.frameCompleted()
            throw error
        }
    }

    private mutating func nextMessage() async throws -> Message? {
        self.parseLeftover()
        while true {
            if let frame = try self.parser.nextFrame() {
                self.frameCompleted()
                return try Message(decoding: frame)
            }
            try await self.reserveForFrameInProgress()
            guard let bytes = try await self.receive() else {
                if self.parser.isInsideFrame {
                    throw TransportError.connectionClosed(midFrame: true)
                }
                return nil
            }
            self.parser.append(bytes: bytes)
        }
    }

    /// Whether a whole frame has already arrived: ``next()`` will not wait for the peer (unless the frame is an
    /// optional one it skips). Lets a client finish local work before it would sit waiting.
    public mutating func hasBufferedFrame() -> Bool {
        self.parseLeftover()
        return self.parser.hasCompleteFrame
    }

    /// The next message if a whole frame has already arrived, without waiting; `nil` otherwise.
    ///
    /// A server uses it to hold back small replies while requests are still queued, and write them together when
    /// it would otherwise wait (one write for a burst of pipelined requests instead of one per reply).
    public mutating func nextIfBuffered() throws -> Message? {
        self.parseLeftover()
        guard let frame = try self.parser.nextFrame() else { return nil }
        self.frameCompleted()
        return try Message(decoding: frame)
    }

    /// Before more of a large frame is read: reserves its length from the budget (waiting for it, and reading
    /// nothing meanwhile) and starts its deadline.
    ///
    /// - Throws: ``FrameBudgetExhausted`` if the budget has no room for the frame within ``frameBudgetPatience``.
    private mutating func reserveForFrameInProgress() async throws {
        guard let budget = self.frameBudget, self.reservation == nil,
            let declared = self.parser.declaredPayloadLength, declared > FrameBudget.freeLength
        else { return }
        let length = declared + FrameLayout.overhead
        let patience = self.frameBudgetPatience
        self.reservation = try await withThrowingTaskGroup(of: FrameBudget.Reservation?.self) { group in
            group.addTask { try await budget.reserve(length) }
            group.addTask {
                try await Task.sleep(for: patience)
                return nil
            }
            defer { group.cancelAll() }
            guard let reservation = try await group.next() ?? nil else {
                throw FrameBudgetExhausted(length: length, patience: patience)
            }
            return reservation
        }
        self.inputWait?.frameStarted()
    }

    /// A frame came out whole: what it reserved is given back (the frame's bytes now belong to its message).
    private mutating func frameCompleted() {
        guard self.reservation != nil else { return }
        self.reservation = nil
        self.inputWait?.frameEnded()
    }

    /// Hands the bytes that came with the magic to the parser, once.
    private mutating func parseLeftover() {
        if let leftover = self.leftover.take() {
            self.parser.append(bytes: leftover)
        }
    }

    /// Reads and discards whatever the peer still sends, for at most `limit` bytes, until it closes: used after
    /// a connection error so that the ERROR sent is not destroyed by a TCP reset.
    public mutating func drain(upTo limit: Int) async {
        var drained = 0
        while drained < limit, let bytes = try? await self.receive() {
            drained += bytes.readableBytes
        }
    }
}

/// A frame found no room in the server's ``FrameBudget`` for as long as its reader was willing to wait: the server is
/// too busy for this connection (which is then closed, so that its peer is not held without an answer).
public struct FrameBudgetExhausted: Error, Hashable, Sendable, CustomStringConvertible {
    public var length: Int
    public var patience: Duration

    public var description: String {
        "server busy: no room for a frame of \(self.length) bytes within \(self.patience); try again later"
    }
}

/// Failures of the connection itself rather than of the bytes on it.
public enum TransportError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The peer closed the connection; `midFrame` when it did so inside a frame or a transfer.
    case connectionClosed(midFrame: Bool)
    /// The peer's first bytes were not Ferry's magic.
    case notFerry
    /// The peer sent a message that is not allowed at this point.
    case unexpected(Message)

    public var description: String {
        switch self {
        case .connectionClosed(let midFrame):
            midFrame ? "connection lost in the middle of a message" : "connection closed by the peer"
        case .notFerry:
            "the peer does not speak the Ferry protocol"
        case .unexpected(let message):
            "unexpected \(message.frameType) frame"
        }
    }
}

extension Optional {
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
