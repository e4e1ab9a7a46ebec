public import NIOCore

/// Why the pipeline stopped a connection's reader from the outside. Raised into the inbound stream, so the
/// connection's task meets it at its next read, between frames it has fully handled.
public enum ConnectionInterruption: Error, Hashable, Sendable {
    case idleTimeout
    case shuttingDown
}

/// Turns `IdleStateHandler`'s "nothing moved in either direction" into ``ConnectionInterruption/idleTimeout``.
///
/// A server's connection task then sends ERROR 209 and closes; a client reports the server went silent. A task stuck writing to a peer that reads nothing
/// never gets that far, so the channel is also closed outright after the linger time.
public final class IdleTimeoutHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let lingerTimeout: TimeAmount
    private var fired = false

    public init(lingerTimeout: TimeAmount) {
        self.lingerTimeout = lingerTimeout
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard !self.fired else { return }
        self.fired = true
        context.fireErrorCaught(ConnectionInterruption.idleTimeout)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: self.lingerTimeout) {
            channel.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension IdleTimeoutHandler: Sendable {}
