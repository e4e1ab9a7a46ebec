import FerryProtocol
import FerryTransport
import NIOCore
import NIOPosix

/// A hand-driven connection over a real loopback socket, for tests that must send what no well-behaved client
/// sends: foreign bytes, corrupted frames, half an upload.
final class RawConnection {
    private let channel: any Channel
    private var iterator: AsyncStream<ByteBuffer>.AsyncIterator
    private var parser = FrameParser(maximumPayloadLength: 1 << 20)
    private var pending = ByteBuffer()

    init(port: Int, host: String = "127.0.0.1") async throws {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream()
        self.channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation))
                }
            }
            .connect(host: host, port: port)
            .get()
        self.iterator = stream.makeAsyncIterator()
    }

    /// Opens a connection and completes a normal handshake, announcing `maximumFramePayload` when given, and
    /// versions 1 to `maximumVersion`.
    static func handshaken(
        port: Int,
        maximumFramePayload: UInt64? = nil,
        maximumVersion: UInt16 = 1
    ) async throws -> RawConnection {
        let connection = try await RawConnection(port: port)
        var hello = FerryConnectionDefaults.hello
        hello.maximumVersion = maximumVersion
        if let maximumFramePayload {
            hello.maximumFramePayload = maximumFramePayload
        }
        try await connection.send(raw: Handshake.magic)
        try await connection.send(.hello(hello))
        let magic = try await connection.readRaw(count: 8)
        guard magic == Handshake.magic else { throw TestFailure("server magic was \(magic)") }
        guard case .hello = try await connection.next() else { throw TestFailure("no server HELLO") }
        return connection
    }

    func send(raw bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(_ message: Message) async throws {
        var buffer = ByteBuffer()
        FrameSerializer.serialize(message, into: &buffer)
        try await self.channel.writeAndFlush(buffer)
    }

    static func encode(_ message: Message) -> [UInt8] {
        var buffer = ByteBuffer()
        FrameSerializer.serialize(message, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    /// Exactly `count` raw bytes (before any frame parsing).
    func readRaw(count: Int) async throws -> [UInt8] {
        while self.pending.readableBytes < count {
            guard var more = await self.iterator.next() else {
                throw TestFailure("connection closed after \(self.pending.readableBytes) of \(count) bytes")
            }
            self.pending.writeBuffer(&more)
        }
        return self.pending.readBytes(length: count) ?? []
    }

    /// Everything until the server closes the connection.
    func readToEnd() async throws -> [UInt8] {
        var bytes = Array(self.pending.readableBytesView)
        self.pending.clear()
        while let more = await self.iterator.next() {
            bytes += Array(more.readableBytesView)
        }
        return bytes
    }

    /// The next message, or `nil` if the server closed the connection.
    func next() async throws -> Message? {
        if self.pending.readableBytes > 0 {
            self.parser.append(bytes: self.pending)
            self.pending.clear()
        }
        while true {
            if let frame = try self.parser.nextFrame() {
                return try Message(decoding: frame)
            }
            guard let bytes = await self.iterator.next() else { return nil }
            self.parser.append(bytes: bytes)
        }
    }

    /// The next message, which must be an ERROR; its code.
    func expectError() async throws -> ErrorCode {
        guard case .error(let reply)? = try await self.next() else {
            throw TestFailure("expected an ERROR")
        }
        return reply.code
    }

    /// The answer to a STOR the server must refuse: an ERROR in place of READY, or READY and then the ERROR (a
    /// server may find a taken name only when it commits, after END: SPEC.md §7.3). Its code.
    func expectStoreRefusal() async throws -> ErrorCode {
        switch try await self.next() {
        case .ready?: return try await self.expectError()
        case .error(let reply)?: return reply.code
        case let other: throw TestFailure("STOR answered \(String(describing: other))")
        }
    }

    /// Stops or resumes reading from the socket, so that the server's writes back up as with a client that stops
    /// reading.
    func setReading(_ reading: Bool) async throws {
        try await self.channel.setOption(ChannelOptions.autoRead, value: reading).get()
        if reading {
            self.channel.read()
        }
    }

    /// Shuts down the sending side only (TCP FIN), as a client does after its last request.
    func finishSending() async throws {
        try await self.channel.close(mode: .output)
    }

    func close() async {
        try? await self.channel.close()
    }
}

/// Hands everything the server sends to the test, and ends the stream when the connection closes.
private final class Collector: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    private let continuation: AsyncStream<ByteBuffer>.Continuation

    init(_ continuation: AsyncStream<ByteBuffer>.Continuation) {
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.continuation.yield(Self.unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.continuation.finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.continuation.finish()
        context.close(promise: nil)
    }
}

enum FerryConnectionDefaults {
    static let hello = Hello(minimumVersion: 1, maximumVersion: 1, maximumFramePayload: 1 << 20, maximumFileSize: .max)
}
