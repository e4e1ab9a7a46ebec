import FerryProtocol
public import FerryTLS
public import FerryTransport
public import NIOCore
public import NIOPosix
import NIOSSL

/// Opens connections to a Ferry server.
///
/// ```swift
/// let entries = try await FerryClient(host: "127.0.0.1", port: 8888).withConnection { connection in
///     try await connection.list()
/// }
/// ```
public struct FerryClient: Sendable {
    public var host: String
    public var port: Int
    /// How long the connection may go without any byte moving before the client gives up on the server.
    public var idleTimeout: Duration
    /// Where connections run, their sessions included when ``runsSessionsOnEventLoop`` is set: it must not be shut
    /// down while a ``withConnection(_:)`` runs.
    public var eventLoopGroup: any EventLoopGroup
    /// Whether a session (the `body` of ``withConnection(_:)``, and every callback it gives, such as `progress`) runs
    /// on the event loop of its connection's channel (``FerryTransport/EventLoopTaskExecutor``) instead of Swift's
    /// global executor. Each read is then parsed and checked on the thread that read it, with no hand-off per read:
    /// `ferry get` of 1 GiB took 0.56 instead of 0.59 s, and 0.52 s with its writes behind it. The loop serves other
    /// channels of ``eventLoopGroup`` too, so such a session must not block: no `EventLoopFuture.wait()` (NIO stops
    /// the process), no waiting on a lock or a terminal. Clear it for sessions that do.
    public var runsSessionsOnEventLoop = true
    /// Who to log in as (AUTH, protocol version 2) once connected; `nil` to stay anonymous.
    public var credentials: Credentials?
    /// Whether a password may be sent over a connection that is neither encrypted nor to this machine, where anyone
    /// on the path can read it. Version 2 has no encryption, so only loopback connections carry passwords otherwise.
    public var allowsPasswordInClear = false
    /// TLS from the first byte (SPEC.md §4.1), and how to decide the server is the one meant; `nil` for plain TCP.
    public var tls: ServerTrust?

    public init(
        host: String = "127.0.0.1",
        port: Int = 8888,
        idleTimeout: Duration = .seconds(60),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.idleTimeout = idleTimeout
        self.eventLoopGroup = eventLoopGroup
    }

    /// Where to report every frame sent and received (``FrameTrace``), with how many bytes of each DATA payload to
    /// show as hex; `nil` for no trace.
    public var trace: (dataBytes: Int, sink: FrameTraceHandler.Sink)?

    var serverDescription: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    /// Connects, completes the handshake, runs `body`, then says EXIT and closes, whatever `body` did. `body` runs on
    /// the connection's event loop unless ``runsSessionsOnEventLoop`` is cleared: it must not block.
    public func withConnection<Result>(
        _ body: (FerryConnection) async throws -> Result
    ) async throws -> Result {
        try await self.withConnection(greeting: nil, body)
    }

    /// A session's first request, sent with its greeting before the server's HELLO arrives (SPEC.md §4 allows frames
    /// of at most 64 KiB there): its answer then comes a round trip sooner. Only when no log-in comes first.
    public enum EarlyRequest: Sendable {
        /// LIST, read by ``FerryConnection/list(maximumEntries:alreadyRequested:)`` with `alreadyRequested` set to
        /// the `Bool` `body` is given.
        case list
    }

    /// ``withConnection(_:)`` with `early` sent with the greeting when it can be (a request given, and no credentials
    /// to log in with first); `body` is told whether it was.
    public func withConnection<Result>(
        sendingEarly early: EarlyRequest?,
        _ body: (FerryConnection, _ sent: Bool) async throws -> Result
    ) async throws -> Result {
        let sent = early != nil && self.credentials == nil
        return try await self.withConnection(greeting: sent ? early : nil) { try await body($0, sent) }
    }

    private func withConnection<Result>(
        greeting early: EarlyRequest?,
        _ body: (FerryConnection) async throws -> Result
    ) async throws -> Result {
        let idle = TimeAmount(self.idleTimeout)
        let inputWait = InputWait()
        let channel: NIOAsyncChannel<ByteBuffer, IOData>
        let verifier = self.tls.map { ServerVerifier(trust: $0, host: self.host, server: self.serverDescription) }
        let tlsContext = try self.tls.map { _ in try FerryClient.tlsContext() }
        let trace = self.trace
        do {
            let bootstrap = ClientBootstrap(group: self.eventLoopGroup)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)  // not .socketOption: that is SO_DEBUG
                .channelOption(.writeBufferWaterMark, value: ChannelTuning.clientWriteBufferWaterMark)
                // TLS hands on what it decrypted once per wake-up, in one buffer: with four reads of up to 2 MiB per
                // wake-up, that buffer grew past the allocator's mmap threshold, and every wake-up mapped fresh
                // pages (130,000 page faults in a 256 MiB download). One read of up to 1 MiB, as the server does,
                // keeps it in the heap: 6,000 faults, and 0.27 instead of 0.47 s.
                .channelOption(
                    .recvAllocator,
                    value: self.tls == nil ? ChannelTuning.clientReceiveAllocator : ChannelTuning.receiveAllocator
                )
                .channelOption(.maxMessagesPerRead, value: self.tls == nil ? UInt(4) : ChannelTuning.readsPerWakeUp)
                .connectTimeout(.seconds(10))
            let initializer: @Sendable (any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, IOData>> = {
                channel in
                channel.eventLoop.makeCompletedFuture {
                    if let verifier, let tlsContext {
                        try channel.pipeline.syncOperations.addHandlers(verifier.makeHandlers(context: tlsContext))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        IdleTimeoutHandler(timeout: idle, lingerTimeout: .seconds(1), inputWait: inputWait)
                    )
                    if let trace {
                        try channel.pipeline.syncOperations.addHandler(
                            FrameTraceHandler(dataBytes: trace.dataBytes) { sent, line in trace.sink(sent, line) }
                        )
                    }
                    return try NIOAsyncChannel<ByteBuffer, IOData>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: ChannelTuning.inboundBackPressure)
                    )
                }
            }
            // An address needs no resolver: skipping getaddrinfo and Happy Eyeballs saves a short command
            // (`ferry list`) a good part of its start-up.
            if let address = try? SocketAddress(ipAddress: self.host, port: self.port) {
                channel = try await bootstrap.connect(to: address, channelInitializer: initializer)
            } else {
                channel = try await bootstrap.connect(host: self.host, port: self.port, channelInitializer: initializer)
            }
        } catch {
            throw FerryClientError.unreachable(server: self.serverDescription, reason: "\(error)")
        }
        let credentials = self.credentials
        let allowsPasswordInClear = self.allowsPasswordInClear || self.tls != nil
        do {
            let greeting: [Message] =
                early.map { request in
                    switch request {
                    case .list: [.list]
                    }
                } ?? []
            // The session runs on the loop that reads its socket (``EventLoopTaskExecutor``): each frame is parsed
            // and checked where it landed, with no hand-off between threads per read.
            let executor = self.runsSessionsOnEventLoop ? EventLoopTaskExecutor(channel.channel.eventLoop) : nil
            return try await withTaskExecutorPreference(executor) {
                try await Self.withConnection(
                    over: channel,
                    server: self.serverDescription,
                    inputWait: inputWait,
                    early: greeting
                ) { connection in
                    if let credentials {
                        guard allowsPasswordInClear || Self.isLoopback(channel.channel.remoteAddress) else {
                            throw FerryClientError.passwordInClear(server: connection.server)
                        }
                        try await connection.logIn(credentials)
                    } else if connection.serverLogin == .required {
                        throw FerryClientError.loginRequired(server: connection.server)
                    }
                    return try await body(connection)
                }
            }
        } catch {
            // TLS reports only that its handshake failed; the verifier knows why.
            if let failure = verifier?.failure {
                throw FerryClientError.untrustedServer(failure)
            }
            if verifier?.peerSpeaksPlainFerry == true {
                throw FerryClientError.tlsNotSpoken(server: self.serverDescription)
            }
            throw error
        }
    }

    /// The client side of TLS, made once: every connection of a process shares it.
    private static func tlsContext() throws -> NIOSSLContext {
        try Self.sharedTLSContext.get()
    }

    private static let sharedTLSContext = Result { () throws(TLSSetupError) -> NIOSSLContext in
        try ServerVerifier.makeContext()
    }

    /// Whether `address` is this machine's (``NIOCore/SocketAddress/isLoopback``); `nil` is not.
    static func isLoopback(_ address: SocketAddress?) -> Bool {
        address?.isLoopback ?? false
    }

    /// Runs a session over a channel that is already connected: the same handshake, checks and EXIT as
    /// ``withConnection(_:)``, for transports set up elsewhere and for in-memory channels in tests and fuzzing.
    ///
    /// - Parameter server: how to name the peer in error messages.
    public static func withConnection<Result>(
        over channel: NIOAsyncChannel<ByteBuffer, IOData>,
        server: String,
        _ body: (FerryConnection) async throws -> Result
    ) async throws -> Result {
        try await Self.withConnection(over: channel, server: server, inputWait: nil, body)
    }

    /// ``withConnection(over:server:_:)`` for a channel whose ``IdleTimeoutHandler`` shares `inputWait` with the
    /// connection's reader.
    static func withConnection<Result>(
        over channel: NIOAsyncChannel<ByteBuffer, IOData>,
        server: String,
        inputWait: InputWait?,
        early: [Message] = [],
        _ body: (FerryConnection) async throws -> Result
    ) async throws -> Result {
        try await channel.executeThenClose { inbound, outbound in
            let connection = FerryConnection(
                reader: MessageReader(
                    inbound,
                    inputWait: inputWait,
                    maximumFramePieces: ChannelTuning.clientFramePieces
                ),
                writer: MessageWriter(outbound, allocator: channel.channel.allocator),
                server: server
            )
            try await connection.handshake(early: early)
            let result: Result
            do {
                result = try await body(connection)
            } catch {
                await connection.exitQuietly()
                throw error
            }
            await connection.exitQuietly()
            return result
        }
    }
}

/// A user name and password to log in with.
public struct Credentials: Sendable, CustomStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    /// Leaves the password out.
    public var description: String { "user \(self.user)" }
}

/// Whether a cut transfer is resumed: a download from the part kept of it (``KeptPartial``), and how long after; an
/// upload from what the server kept of it (``KeptUpload``).
public struct ResumePolicy: Sendable {
    /// `false` starts every transfer from the beginning: what was kept of a download is removed, and what the server
    /// kept of an upload is emptied.
    public var enabled: Bool
    /// What was kept of a download longer ago than this is removed, not resumed.
    public var maximumAge: Duration
    /// Where the tokens of uploads the server keeps are recorded (``KeptUpload/defaultFolder`` is where `ferry` keeps
    /// them); `nil` for nowhere: no upload is resumed.
    public var keptUploadsFolder: String?

    public init(
        enabled: Bool = true,
        maximumAge: Duration = .seconds(7 * 24 * 3600),
        keptUploadsFolder: String? = nil
    ) {
        self.enabled = enabled
        self.maximumAge = maximumAge
        self.keptUploadsFolder = keptUploadsFolder
    }

    public static let standard = ResumePolicy()
}
