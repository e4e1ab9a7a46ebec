public import NIOCore

/// Why the pipeline stopped a connection's reader from the outside. Raised into the inbound stream, so the
/// connection's task meets it at its next read, between frames it has fully handled.
public enum ConnectionInterruption: Error, Hashable, Sendable {
    case idleTimeout
    /// The handshake did not complete within its deadline, however much the peer sent.
    case handshakeTimeout
    /// A frame holding part of the server's frame budget did not arrive whole within the idle timeout.
    case frameTooSlow
    case shuttingDown
}

/// Tells the connection's ``IdleTimeoutHandler`` (as a user outbound event) that the handshake is complete, so its
/// handshake deadline no longer applies.
public struct HandshakeCompleted: Sendable {
    public init() {}
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
    /// How long the peer has to complete the handshake, trickling or not; `nil` for no such deadline.
    private let handshakeTimeout: TimeAmount?
    private var handshakeDeadline: Scheduled<Void>?
    private var handshakeCompleted = false

    private let inputWait: InputWait?
    /// The reader's state when bytes last arrived: equal to its current state (and odd) while those bytes wait for
    /// a reader that has not resumed yet.
    private var inputStateAtLastRead = UInt64.max

    /// - Parameter inputWait: shared with the connection's ``MessageReader``, so that only time its reader spends
    ///   waiting for the peer counts; without it, any time NIO has a read outstanding does.
    ///   - handshakeTimeout: how long a new connection has to complete its handshake (until ``HandshakeCompleted``
    ///     is sent down the pipeline), whether bytes trickle in or not: a server's connection slots are not held
    ///     for the whole idle timeout by peers that never say who they are.
    public init(
        timeout: TimeAmount,
        lingerTimeout: TimeAmount,
        inputWait: InputWait? = nil,
        handshakeTimeout: TimeAmount? = nil
    ) {
        self.timeout = timeout
        self.lingerTimeout = lingerTimeout
        self.inputWait = inputWait
        self.handshakeTimeout = handshakeTimeout
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            self.scheduleCheck(context: context)
            self.scheduleHandshakeDeadline(context: context)
        }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.lastProgress = .now()
        self.scheduleCheck(context: context)
        self.scheduleHandshakeDeadline(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.cancelChecks()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelChecks()
    }

    public func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is HandshakeCompleted else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        self.handshakeCompleted = true
        self.handshakeDeadline?.cancel()
        self.handshakeDeadline = nil
        promise?.succeed()
    }

    private func cancelChecks() {
        self.check?.cancel()
        self.check = nil
        self.handshakeDeadline?.cancel()
        self.handshakeDeadline = nil
    }

    private func scheduleHandshakeDeadline(context: ChannelHandlerContext) {
        guard let handshakeTimeout, self.handshakeDeadline == nil, !self.handshakeCompleted, !self.fired else { return }
        self.handshakeDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
            self.handshakeDeadline = nil
            guard context.channel.isActive, !self.handshakeCompleted else { return }
            self.interrupt(context: context, .handshakeTimeout)
        }
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
        // Noted before the bytes reach the reader's stream (they do in this call): a reader waiting now is the one
        // they resume. Noted after, it could be a later wait, which the peer owes bytes that never came.
        self.inputStateAtLastRead = self.inputWait?.current ?? .max
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

    /// Whether our reader is waiting for bytes the peer has not sent: it is waiting, and nothing arrived during this
    /// wait (bytes that did are ours to handle, by a reader not yet scheduled).
    private var isAwaitingPeerInput: Bool {
        guard let inputWait = self.inputWait else { return self.readPending }
        let state = inputWait.current
        return InputWait.isWaiting(state) && state != self.inputStateAtLastRead
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
        if let frameStart = self.inputWait?.budgetedFrameStart, NIODeadline.now() - frameStart >= self.timeout {
            // Trickling bytes keep a connection from being idle, not a large frame from being held forever.
            self.interrupt(context: context, .frameTooSlow)
            return
        }
        let awaitingInput = self.isAwaitingPeerInput
        if !awaitingInput, self.writesPending == 0 {
            // We are not waiting for the peer right now: whatever is slow, it is not the peer.
            self.lastProgress = .now()
        }
        if awaitingInput, let started = self.inputWait?.latestStart, started > self.lastProgress {
            // The peer owes nothing from before the reader asked (it may have been busy long after the last byte).
            self.lastProgress = started
        }
        if NIODeadline.now() - self.lastProgress >= self.timeout, let taken = Self.lastDataTaken(on: context.channel),
            taken > self.lastProgress
        {
            // Completed writes do not show everything the peer takes: a write completes only once all of it is in
            // the socket's buffer, so a 1 MiB piece to a peer reading 10 KB/s stays pending for longer than the
            // timeout, and the last MiBs of a download are still being taken after END was handed over.
            self.lastProgress = taken
        }
        guard NIODeadline.now() - self.lastProgress >= self.timeout else {
            self.scheduleCheck(context: context)
            return
        }
        self.interrupt(context: context, .idleTimeout)
    }

    /// Raises `reason` into the inbound stream, then closes the channel after the linger time.
    private func interrupt(context: ChannelHandlerContext, _ reason: ConnectionInterruption) {
        guard !self.fired else { return }
        self.fired = true
        context.fireErrorCaught(reason)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: self.lingerTimeout) {
            channel.close(promise: nil)
        }
    }
}

extension IdleTimeoutHandler {
    /// When the peer last took data from the socket, as far as the kernel knows (`TCP_INFO`, Linux): the older of
    /// the last data sent and the last acknowledgement received. Data is sent only into the window the peer opens by
    /// reading (a window probe carries none), and acknowledged only by a peer that is there: a retransmission to a
    /// vanished peer is data sent but never acknowledged, a peer that stopped reading acknowledges probes but is
    /// sent no data. `nil` where this is not known. Called on the event loop, where the channel answers at once.
    private static func lastDataTaken(on channel: any Channel) -> NIODeadline? {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        var taken: NIODeadline?
        provider.getTCPInfo().assumeIsolated().whenSuccess { info in
            let milliseconds = max(info.tcpi_last_data_sent, info.tcpi_last_ack_recv)
            taken = .now() - .milliseconds(Int64(milliseconds))
        }
        return taken
        #else
        return nil
        #endif
    }
}

@available(*, unavailable)
extension IdleTimeoutHandler: Sendable {}
