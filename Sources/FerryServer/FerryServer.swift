import FerryProtocol
import FerryTLS
import FerryTransport
public import Logging
public import NIOCore
public import NIOPosix
import NIOSSL
public import ServiceLifecycle
import Synchronization

/// The Ferry server as a `Service`: it listens, gives each connection a task of its own, and on graceful
/// shutdown stops accepting, lets running transfers finish, and tells idle clients it is going (210).
///
/// One connection's failure stays in its task: it is caught there, logged, and never reaches the accept loop.
public struct FerryServer: Service {
    private let configuration: ServerConfiguration
    private let library: FileLibrary
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let onListening: @Sendable (SocketAddress) -> Void
    private let transfers = TransferBudget()
    private let logins = LoginThrottle()
    private let frameBudget: FrameBudget

    /// - Parameter onListening: called once with the bound address (the real port when `port` is 0).
    public init(
        configuration: ServerConfiguration,
        library: FileLibrary,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.library = library
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        self.onListening = onListening
        self.frameBudget = FrameBudget(limit: configuration.partialFrameMemory)
    }

    public func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let tracing = self.logger.logLevel <= .trace
        let serverChannel = try await ServerBootstrap(group: self.eventLoopGroup)
            .serverChannelOption(.backlog, value: Int32(clamping: max(configuration.maximumConnections, 128)))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // TCP_NODELAY is a TCP-level option (NIO sets it by default; stated here because replies are small).
            // At the socket level its number means SO_DEBUG, which only root may set: every connection failed.
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // A client may shut down its sending side after its last request and still read the answers.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.writeBufferWaterMark, value: ChannelTuning.writeBufferWaterMark)
            .childChannelOption(.recvAllocator, value: ChannelTuning.receiveAllocator)
            .childChannelOption(.maxMessagesPerRead, value: ChannelTuning.readsPerWakeUp)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let inputWait = InputWait()
                    if let tls = configuration.tls {
                        try channel.pipeline.syncOperations.addHandlers(
                            PlainClientRefuser(lingerTimeout: TimeAmount(configuration.lingerTimeout)) {
                                logger.notice(
                                    "a client without TLS was told to use TLS",
                                    metadata: ["peer": "\(channel.remoteAddress?.displayString ?? "unknown")"]
                                )
                            },
                            NIOSSLServerHandler(context: tls)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleTimeoutHandler(
                            timeout: TimeAmount(configuration.idleTimeout),
                            lingerTimeout: TimeAmount(configuration.lingerTimeout),
                            inputWait: inputWait,
                            handshakeTimeout: TimeAmount(configuration.handshakeTimeout)
                        )
                    )
                    if tracing {
                        // --log-level trace: every frame, as `ferry --trace` shows it, per connection.
                        let peer = channel.remoteAddress?.displayString ?? "unknown"
                        try channel.pipeline.syncOperations.addHandler(
                            FrameTraceHandler { sent, line in
                                logger.trace(
                                    "\(sent ? "sent" : "received") \(line)",
                                    metadata: ["peer": "\(peer)"]
                                )
                            }
                        )
                    }
                    let connection = try NIOAsyncChannel<ByteBuffer, IOData>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(
                            backPressureStrategy: ChannelTuning.inboundBackPressure,
                            isOutboundHalfClosureEnabled: true
                        )
                    )
                    return (connection, inputWait)
                }
            }
        try await Self.keepAccepting(serverChannel.channel, logger: self.logger)
        // Before "listening" is announced: a scrape right after it finds every series at 0, not missing.
        ServerMetrics.register()
        if let address = serverChannel.channel.localAddress {
            self.onListening(address)
        }
        let connections = ConnectionCounter()
        // Kept uploads expire whether or not anything else happens on the server.
        let library = self.library
        let sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: library.keptUploads.sweepInterval)
                await library.sweepKeptUploads()
            }
        }
        defer { sweeper.cancel() }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                do {
                    try await serverChannel.executeThenClose { inbound in
                        for try await (connection, inputWait) in inbound {
                            let peer = PeerAddress(connection.channel.remoteAddress)
                            let refusal = connections.admit(
                                peer,
                                limit: configuration.maximumConnections,
                                perPeer: configuration.maximumConnectionsPerAddress
                            )
                            switch refusal {
                            case nil: ServerMetrics.connectionsOpen.increment()
                            case .serverFull: ServerMetrics.refusedBusy.increment()
                            case .peerFull: ServerMetrics.refusedPerAddress.increment()
                            }
                            group.addTask {
                                if let refusal {
                                    // Each answer costs a descriptor for the linger time: beyond a few hundred at
                                    // once, a flood of refused connections is closed without one.
                                    if connections.beginTurnAway(limit: Self.simultaneousTurnAways) {
                                        await self.turnAway(connection, because: refusal)
                                        connections.endTurnAway()
                                    } else {
                                        try? await connection.channel.close()
                                    }
                                } else {
                                    await self.serve(connection, inputWait: inputWait)
                                    ServerMetrics.connectionsOpen.decrement()
                                    if connections.release(peer) == 0 {
                                        await Self.releaseFreeMemoryWhileIdle(connections)
                                    }
                                }
                            }
                        }
                    }
                } catch {
                    self.logger.error("accepting connections failed", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            serverChannel.channel.close(promise: nil)
        }
        self.logger.info("server stopped")
    }

    /// Serves one connection from handshake to close; never throws, whatever the peer does.
    ///
    /// ``run()`` calls this for every accepted connection within the limit. It is public so that a connection
    /// accepted elsewhere, or an in-memory channel in tests and fuzzing, gets exactly the same handling. The channel
    /// should have its outbound half-closure enabled, so that a connection error is delivered before the close, and
    /// must accept `FileRegion` writes unless the configuration has TLS (a plain socket does; a TLS handler does
    /// not): without TLS, large files are sent with `sendfile` from their checksum tables.
    public func serve(_ connection: NIOAsyncChannel<ByteBuffer, IOData>) async {
        await self.serve(connection, inputWait: nil)
    }

    /// ``serve(_:)`` for a connection whose ``IdleTimeoutHandler`` shares `inputWait` with its reader.
    func serve(_ connection: NIOAsyncChannel<ByteBuffer, IOData>, inputWait: InputWait?) async {
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(connection.channel.remoteAddress?.displayString ?? "unknown")"
        logger.info("connection opened")
        let quiescer = ConnectionQuiescer(channel: connection.channel)
        let started = ContinuousClock.now
        let reason: String
        do {
            reason = try await withGracefulShutdownHandler {
                try await connection.executeThenClose { inbound, outbound in
                    var session = ServerSession(
                        inbound: inbound,
                        outbound: outbound,
                        channel: connection.channel,
                        inputWait: inputWait,
                        library: self.library,
                        configuration: self.configuration,
                        quiescer: quiescer,
                        transfers: self.transfers,
                        frameBudget: self.frameBudget,
                        logins: self.logins,
                        logger: logger
                    )
                    return await session.run()
                }
            } onGracefulShutdown: {
                quiescer.requestShutdown()
            }
        } catch {
            reason = "\(error)"
        }
        logger.info(
            "connection closed",
            metadata: ["reason": "\(reason)", "duration_ms": "\((ContinuousClock.now - started).milliseconds)"]
        )
    }

    /// Answers a connection over a limit with "server busy" and closes it, without reading its requests.
    private func turnAway(
        _ connection: NIOAsyncChannel<ByteBuffer, IOData>,
        because refusal: ConnectionCounter.Refusal
    ) async {
        let peer = connection.channel.remoteAddress?.displayString ?? "unknown"
        let message =
            switch refusal {
            case .serverFull:
                "server busy: \(self.configuration.maximumConnections) connections already; try again later"
            case .peerFull:
                "server busy: \(self.configuration.maximumConnectionsPerAddress) connections from your address "
                    + "already; try again later"
            }
        self.logger.warning(
            "connection refused",
            metadata: ["peer": "\(peer)", "reason": "\(refusal == .serverFull ? "server full" : "address full")"]
        )
        let channel = connection.channel
        try? await connection.executeThenClose { inbound, outbound in
            let writer = MessageWriter(outbound, allocator: channel.allocator)
            let reply = ErrorReply(code: .serverBusy, message: message)
            try await writer.writeMagic(then: .error(reply))
            writer.finish()
            channel.eventLoop.scheduleTask(in: TimeAmount(self.configuration.lingerTimeout)) {
                channel.close(promise: nil)
            }
            var reader = MessageReader(inbound)
            await reader.drain(upTo: 64 * 1024)
        }
    }
}

extension FerryServer {
    /// Makes the failure of one accepted connection's setup (an option the socket refuses, a peer gone before it
    /// was set up) a log line instead of the end of the server.
    ///
    /// NIO reports such a failure as an error on the listening channel, after its accept handler; the async
    /// channel there ends its stream of connections at the first error, and the accept loop with it. This handler
    /// goes between the two and keeps the error from reaching the stream. Errors of `accept` itself (too many open
    /// files) are taken care of before that, by NIO's back-off handler.
    private static func keepAccepting(_ listener: any Channel, logger: Logger) async throws {
        try await listener.eventLoop.submit {
            let operations = listener.pipeline.syncOperations
            let acceptor = try operations.context(name: "AcceptHandler").handler
            try operations.addHandler(AcceptFailureLogger(logger: logger), position: .after(acceptor))
        }.get()
    }

    /// Gives what the connections left free in the heap back to the system: at once, and again after a moment if
    /// the server is still idle.
    ///
    /// At once, because the next burst of connections may come within milliseconds and would otherwise find the
    /// heap still holding the last one's buffers (200 simultaneous downloads in three rounds: 27.9, 22.7 and
    /// 22.8 MiB with the trim at once; 52.4 MiB in every round with only the later one). Again later, because a
    /// connection's last buffers (the socket's receive buffer, the frames still queued in its stream) are freed
    /// only when NIO lets go of the channel, after ``serve(_:)`` returns: trimmed only at once, the heap kept 2 to
    /// 9 MiB of freed transfer buffers resident between the benchmark's phases.
    fileprivate static func releaseFreeMemoryWhileIdle(_ connections: ConnectionCounter) async {
        TransferMemory.releaseFreeMemory()
        do {
            try await Task.sleep(for: Self.idleBeforeReleasingMemory)
        } catch {
            return
        }
        if connections.isIdle {
            TransferMemory.releaseFreeMemory()
        }
    }

    /// How many refused connections are answered ("server busy") at once; more are closed without an answer.
    static let simultaneousTurnAways = 256

    /// Long enough for NIO to release the closed channels, short enough to come before the next burst of work.
    static let idleBeforeReleasingMemory = Duration.milliseconds(200)
}

/// Logs and absorbs the errors of connections whose setup failed (see ``FerryServer/keepAccepting(_:logger:)``).
private final class AcceptFailureLogger: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.warning("a connection could not be set up", metadata: ["error": "\(error)"])
    }
}

/// How many connections are being served, in all and per peer, so the limits are enforced at accept time.
private final class ConnectionCounter: Sendable {
    private let state = Mutex(State())

    private struct State {
        var total = 0
        var perPeer: [PeerAddress: Int] = [:]
        var turningAway = 0
    }

    /// Counts in a refused connection being answered, if fewer than `limit` are.
    func beginTurnAway(limit: Int) -> Bool {
        self.state.withLock { state in
            guard state.turningAway < limit else { return false }
            state.turningAway += 1
            return true
        }
    }

    func endTurnAway() {
        self.state.withLock { $0.turningAway -= 1 }
    }

    enum Refusal: Hashable, Sendable {
        case serverFull
        case peerFull
    }

    /// Counts a connection in, or says which limit it is over (then it is not counted).
    func admit(_ peer: PeerAddress, limit: Int, perPeer: Int) -> Refusal? {
        self.state.withLock { state in
            guard state.total < limit else { return .serverFull }
            let fromPeer = state.perPeer[peer, default: 0]
            guard fromPeer < perPeer else { return .peerFull }
            state.total += 1
            state.perPeer[peer] = fromPeer + 1
            return nil
        }
    }

    /// Counts a connection out; returns how many are still being served.
    func release(_ peer: PeerAddress) -> Int {
        self.state.withLock { state in
            state.total -= 1
            let left = state.perPeer[peer, default: 1] - 1
            state.perPeer[peer] = left > 0 ? left : nil
            return state.total
        }
    }

    var isIdle: Bool {
        self.state.withLock { $0.total == 0 }
    }
}
