import NIOCore
import NIOPosix

/// A loopback listener that answers every connection with fixed bytes and closes: a stand-in for servers that do
/// not speak Ferry, that send what a fuzzer found, or that play a scripted part of a conversation.
struct TextListener {
    let channel: any Channel
    let port: Int

    static func start(reply: String) async throws -> TextListener {
        try await Self.start(reply: ByteBuffer(string: reply))
    }

    /// Writes `reply` as soon as a connection is up, then closes it.
    static func start(reply: ByteBuffer) async throws -> TextListener {
        try await Self.start(script: [(after: 0, reply: reply)])
    }

    /// A listener that plays a server's part of a conversation: each reply is written once the client has sent at
    /// least `after` bytes in all, and the connection closes after the last one, so a client that writes between
    /// two replies is not met by a closed socket. With `closing` false the connection stays open after the last reply,
    /// as a server in the middle of a transfer.
    static func start(script: [(after: Int, reply: ByteBuffer)], closing: Bool = true) async throws -> TextListener {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ScriptedReplier(script: script, closing: closing))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return TextListener(channel: channel, port: channel.localAddress?.port ?? 0)
    }

    /// A port on which nothing listens (bound, read, released).
    static func unusedPort() async throws -> Int {
        let listener = try await Self.start(reply: "")
        let port = listener.port
        await listener.stop()
        return port
    }

    func stop() async {
        try? await self.channel.close()
    }
}

/// Writes each reply of its script once enough bytes have arrived, then closes.
private final class ScriptedReplier: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var script: ArraySlice<(after: Int, reply: ByteBuffer)>
    private let closing: Bool
    private var received = 0

    init(script: [(after: Int, reply: ByteBuffer)], closing: Bool) {
        self.script = script[...]
        self.closing = closing
    }

    func channelActive(context: ChannelHandlerContext) {
        self.play(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += self.unwrapInboundIn(data).readableBytes
        self.play(context)
    }

    private func play(_ context: ChannelHandlerContext) {
        while let next = self.script.first, next.after <= self.received {
            self.script.removeFirst()
            context.write(NIOAny(next.reply), promise: nil)
        }
        context.flush()
        if self.script.isEmpty, self.closing {
            let channel = context.channel
            context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
