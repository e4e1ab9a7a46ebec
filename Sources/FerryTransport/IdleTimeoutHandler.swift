public import NIOCore

/// Why the pipeline stopped a connection's reader from the outside. Raised into the inbound stream, so the
/// connection's task meets it at its next read, between frames it has fully handled.
public enum ConnectionInterruption: Error, Hashable, Sendable {
    case idleTimeout
    case shuttingDown
}

/// Ends connections on which the *peer* has made no progress for a while: raises
/// ``ConnectionInterruption/idleTimeout`` into the inbound stream, then closes the channel after the linger time
/// (a task stuck writing to a peer that reads nothing never gets to handle the error itself).
///
/// A connection is idle when we are waiting for the peer (to send, or to take what we wrote) and nothing moves
/// either way. Unlike NIO's `IdleStateHandler`, time during which *we* are not reading (our consumer is busy or
/// applying backpressure: a slow disk, a loaded machine) does not count: a transfer that keeps moving is never
/// idle, while a silent peer, a stalled frame, or a peer that stopped reading our data is.
public final class IdleTimeoutHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = IOData
    public typealias OutboundOut = IOData

    private let timeout: TimeAmount
    private let lingerTimeout: TimeAmount
    private var lastProgress = NIODeadline.now()
    private var readPending = false
    /// Writes handed to the socket that have not completed: while there are any, we are waiting for the peer.
    private var writesPending = 0
    private var check: Scheduled<Void>?
    private var fired = false

    public init(timeout: TimeAmount, lingerTimeout: TimeAmount) {
        self.timeout = timeout
        self.lingerTimeout = lingerTimeout
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            self.scheduleCheck(context: context)
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.lastProgress = .now()
        self.scheduleCheck(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.check?.cancel()
        self.check = nil
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.check?.cancel()
        self.check = nil
    }

    public func read(context: ChannelHandlerContext) {
        self.readPending = true
        context.read()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.lastProgress = .now()
        context.fireChannelRead(data)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        self.readPending = false
        self.lastProgress = .now()
        context.fireChannelReadComplete()
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let written = promise ?? context.eventLoop.makePromise()
        self.writesPending += 1
        written.futureResult.assumeIsolated().whenComplete { result in
            self.writesPending -= 1
            if case .success = result {
                self.lastProgress = .now()
            }
        }
        context.write(data, promise: written)
    }

    private func scheduleCheck(context: ChannelHandlerContext) {
        guard self.check == nil, !self.fired else { return }
        let interval = max(TimeAmount.milliseconds(10), TimeAmount.nanoseconds(self.timeout.nanoseconds / 4))
        self.check = context.eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.check = nil
            self.evaluate(context: context)
        }
    }

    private func evaluate(context: ChannelHandlerContext) {
        guard context.channel.isActive, !self.fired else { return }
        if !self.readPending, self.writesPending == 0 {
            // We are not waiting for the peer right now: whatever is slow, it is not the peer.
            self.lastProgress = .now()
        }
        guard NIODeadline.now() - self.lastProgress >= self.timeout else {
            self.scheduleCheck(context: context)
            return
        }
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
