import NIOCore
import NIOPosix

/// A loopback listener that answers every connection with fixed bytes and closes: a stand-in for servers that do
/// not speak Ferry, or that send what a fuzzer found.
struct TextListener {
    let channel: any Channel
    let port: Int

    static func start(reply: String) async throws -> TextListener {
        try await Self.start(reply: ByteBuffer(string: reply))
    }

    static func start(reply: ByteBuffer) async throws -> TextListener {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Replier(reply: reply))
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

/// Writes the reply as soon as the connection is up, then closes it.
private final class Replier: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    let reply: ByteBuffer

    init(reply: ByteBuffer) {
        self.reply = reply
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(NIOAny(self.reply)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
