public import FerryProtocol
public import NIOSSL

/// Everything a server operator can set. The defaults are those SPEC.md §9 lists.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// What a client may do without logging in; `nil` for nothing (then every client must log in). With `users`
    /// and no word on it, nothing.
    public var anonymousPermission: Permission?
    /// The accounts clients may log in as (AUTH, protocol version 2); `nil` for none.
    public var users: UsersFile?
    /// Failed log-ins on one connection before it is closed (211).
    public var maximumLoginFailures: Int
    /// Connections beyond this are answered "server busy" (208) at once and closed.
    public var maximumConnections: Int
    /// Connections from one address (an IPv4 address, or an IPv6 /64: one host's share) beyond this are answered
    /// "server busy" (208) too, so that one host cannot take every slot.
    public var maximumConnectionsPerAddress: Int
    /// How long a new connection has to complete the handshake, however slowly its bytes come (209 after it).
    public var handshakeTimeout: Duration
    /// A connection on which nothing moved in either direction for this long is closed (209). A transfer that
    /// is moving is never idle; a frame stalled midway is.
    public var idleTimeout: Duration
    /// The largest upload accepted (103 above it).
    public var maximumFileSize: UInt64
    /// The largest frame payload accepted from clients, announced in HELLO.
    public var maximumFramePayload: Int
    /// How much memory frames still being received may hold, all connections together (``FrameBudget``): frames
    /// over 16 KiB wait for their share, and must then arrive whole within the idle timeout.
    public var partialFrameMemory: Int
    /// How long a connection that hit a connection error may still send before it is closed: long enough for
    /// the ERROR to be read rather than reset away.
    public var lingerTimeout: Duration
    /// TLS for every connection (SPEC.md §4.1), from the first byte; `nil` for plain TCP. Files then go through
    /// TLS's buffers instead of `sendfile`, which cannot encrypt.
    public var tls: NIOSSLContext?

    public init(
        host: String = "127.0.0.1",
        port: Int = 8888,
        anonymousPermission: Permission?? = nil,
        users: UsersFile? = nil,
        maximumLoginFailures: Int = 5,
        maximumConnections: Int = 4096,
        maximumConnectionsPerAddress: Int = 64,
        handshakeTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60),
        maximumFileSize: UInt64 = 1 << 40,
        maximumFramePayload: Int = ProtocolLimits.defaultMaximumFramePayload,
        partialFrameMemory: Int = 64 << 20,
        lingerTimeout: Duration = .seconds(2),
        tls: NIOSSLContext? = nil
    ) {
        self.host = host
        self.port = port
        // Unsaid: everything on a server without accounts, nothing beside accounts.
        self.anonymousPermission = anonymousPermission ?? (users == nil ? .full : nil)
        self.users = users
        self.maximumLoginFailures = maximumLoginFailures
        self.maximumConnections = maximumConnections
        self.maximumConnectionsPerAddress = maximumConnectionsPerAddress
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.maximumFileSize = maximumFileSize
        self.maximumFramePayload = maximumFramePayload
        self.partialFrameMemory = partialFrameMemory
        self.lingerTimeout = lingerTimeout
        self.tls = tls
    }

    var hello: Hello {
        Hello(
            minimumVersion: Handshake.supportedVersions.lowerBound,
            maximumVersion: Handshake.supportedVersions.upperBound,
            maximumFramePayload: UInt64(self.maximumFramePayload),
            maximumFileSize: self.maximumFileSize,
            login: self.users == nil ? .none : self.anonymousPermission == nil ? .required : .offered
        )
    }
}
