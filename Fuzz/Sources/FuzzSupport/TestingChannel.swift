import NIOCore
import NIOEmbedded

/// An in-memory connection: what the harness writes arrives as if read from a socket, and what the code under test
/// writes is collected and dropped.
public struct InMemoryConnection: Sendable {
    public let channel: NIOAsyncTestingChannel
    public let asyncChannel: NIOAsyncChannel<ByteBuffer, IOData>

    public static func make() async throws -> InMemoryConnection {
        let channel = NIOAsyncTestingChannel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9))
        let asyncChannel = try await channel.testingEventLoop.executeInContext {
            try NIOAsyncChannel<ByteBuffer, IOData>(
                wrappingChannelSynchronously: channel,
                configuration: .init(isOutboundHalfClosureEnabled: true)
            )
        }
        return InMemoryConnection(channel: channel, asyncChannel: asyncChannel)
    }

    /// Delivers the reads, then the peer's end of input (a half-close).
    public func deliver(_ reads: [ByteBuffer]) async {
        for read in reads {
            try? await self.channel.writeInbound(read)
        }
        let channel = self.channel
        try? await channel.testingEventLoop.executeInContext {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    /// Drops what the code under test wrote, fires the timers it left (a linger close, say) and releases the
    /// channel, so nothing outlives the input.
    public func tearDown() async {
        while (try? await self.channel.readOutbound(as: IOData.self)) != nil {}
        await self.channel.testingEventLoop.advanceTime(by: .hours(1))
        _ = try? await self.channel.finish(acceptAlreadyClosed: true)
        while (try? await self.channel.readOutbound(as: IOData.self)) != nil {}
        try? await self.channel.testingEventLoop.shutdownGracefully()
    }
}
