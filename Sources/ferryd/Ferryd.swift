import ArgumentParser
import CoreMetrics
import FerryServer
import FerryTLS
import FerryTransport
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
enum FerrydMain {
    /// Tunes the allocator before anything else runs, then runs the command.
    ///
    /// `Serve.run()` is too late: it runs on a thread of the concurrency pool, which has allocated by then and so
    /// has a malloc arena of its own that the arena limit no longer merges. The heap's free memory at the top of
    /// such an arena is not returned by `malloc_trim` either: with that second arena, ferryd idled at 8 to 12 MiB
    /// of anonymous memory after the benchmark's phases instead of about 2.
    static func main() async {
        TransferMemory.tuneAllocator(arenas: 1)
        await Ferryd.main()
    }
}

/// `ferryd [serve] OPTIONS` serves a library; `ferryd users …` manages its accounts.
struct Ferryd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryd",
        abstract: "The Ferry server: serve a folder to Ferry clients (the default), or manage its accounts.",
        discussion: "Run 'ferryd serve --help' for the server's options.",
        subcommands: [Serve.self, Users.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: localized("Serve a folder to Ferry clients (the default command)."),
        discussion: """
            Clients list, download and upload the files of one flat folder. Every transfer is verified with \
            CRC-32s; an upload becomes visible only once it is complete, verified and on disk. SIGINT, \
            SIGTERM or SIGHUP stops accepting connections and lets running transfers finish within the grace period.
            """
    )

    @Option(help: "The folder to serve; created if missing.")
    var root = "./library"

    @Option(
        help: """
            The address to listen on: 127.0.0.1 or ::1 for this machine only (the default); 0.0.0.0 for every IPv4 \
            interface or :: for IPv6, which needs --anonymous.
            """
    )
    var host = "127.0.0.1"

    @Option(
        help: """
            The accounts clients may log in as (see 'ferryd users add'). With it, clients that do not log in get \
            what --anonymous says, and nothing by default.
            """
    )
    var users: String?

    @Option(
        help: """
            What clients that do not log in may do: none, read (list and download) or write (also upload, \
            overwrite, delete and rename). An address other machines can reach needs --users or this; on this \
            machine only without --users, the default is write.
            """
    )
    var anonymous: AnonymousAccess?

    @Option(
        help: ArgumentHelp(
            "Serve TLS with this PEM certificate (chain), from a CA clients trust. Needs --tls-key.",
            valueName: "file"
        )
    )
    var tlsCert: String?

    @Option(help: ArgumentHelp("The PEM private key of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Flag(
        help: """
            Serve TLS with a self-signed certificate, made the first time and kept in the library's hidden             .ferry-tls folder, so that its fingerprint (printed at start-up) stays the same across restarts.
            """
    )
    var tlsSelfSigned = false

    @Option(help: "Failed log-ins one connection may make before it is closed.")
    var maxLoginFailures = 5

    @Option(help: "The TCP port to listen on; 0 picks a free one.")
    var port = 8888

    @Option(help: "Connections served at once; further clients are told the server is busy.")
    var maxConnections = 4096

    @Option(
        help:
            "Connections served at once from one address (an IPv6 /64 counts as one); further ones are told the server is busy."
    )
    var maxConnectionsPerAddress = 64

    @Option(help: "Seconds a new connection has to complete the handshake, however slowly its bytes come.")
    var handshakeTimeout: Double = 10

    @Option(help: "Seconds a connection may go without any byte moving in either direction before it is closed.")
    var idleTimeout: Double = 60

    @Option(help: "The largest upload accepted, in bytes.")
    var maxFileSize: UInt64 = 1 << 40

    @Option(
        help: """
            Hours an upload cut short is kept for its client to resume (protocol version 4) after its last bytes \
            arrived; then it is removed.
            """
    )
    var keptUploadHours: Double = 24

    @Option(
        help: """
            The most bytes all uploads kept to be resumed may hold together; keeping one more removes the oldest, and \
            a larger one is not kept.
            """
    )
    var keptUploadBytes: UInt64 = 16 << 30

    @Option(
        help: ArgumentHelp(
            "Bytes received between two records of a resumable upload (what a crash may lose of it).",
            visibility: .hidden
        )
    )
    var uploadCheckpointBytes: UInt64 = 16 << 20

    @Option(help: "Seconds running transfers get to finish after SIGINT, SIGTERM or SIGHUP.")
    var gracePeriod: Double = 30

    @Option(
        help: ArgumentHelp(
            """
            Serve Prometheus metrics at http://ADDRESS:PORT/metrics (connections, requests by operation and result, \
            bytes, transfer durations, uploads committed, verification and log-in failures). 127.0.0.1:9898, say.
            """,
            valueName: "address:port"
        )
    )
    var metrics: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    /// A year: any longer duration, or infinity, is a typing mistake (and would not fit the clock's milliseconds).
    static let longestDuration: Double = 365 * 24 * 3600
    /// A millisecond: durations are kept in milliseconds, and a shorter timeout would be zero (every connection cut).
    static let shortestDuration: Double = 0.001

    func validate() throws {
        guard (0...65_535).contains(self.port) else {
            throw ValidationError(localized("--port must be between 0 and 65535"))
        }
        guard self.maxConnections > 0, self.maxConnectionsPerAddress > 0 else {
            throw ValidationError("--max-connections and --max-connections-per-address must be at least 1")
        }
        guard self.handshakeTimeout >= Self.shortestDuration, self.handshakeTimeout <= Self.longestDuration else {
            throw ValidationError("--handshake-timeout must be between 0.001 and \(Int(Self.longestDuration)) s")
        }
        guard self.idleTimeout >= Self.shortestDuration, self.gracePeriod >= 0,
            self.idleTimeout <= Self.longestDuration, self.gracePeriod <= Self.longestDuration
        else {
            throw ValidationError(
                "--idle-timeout must be positive and --grace-period not negative, both at most \(Int(Self.longestDuration)) s"
            )
        }
        if self.anonymous == nil, self.users == nil, !Serve.isLoopback(self.host) {
            throw ValidationError(
                localized(
                    "--host %@ lets other machines connect: give --users FILE (accounts; see 'ferryd users add'), or say what anyone who reaches the port may do with --anonymous read or --anonymous write",
                    self.host
                )
            )
        }
        if self.anonymous == AnonymousAccess.none, self.users == nil {
            throw ValidationError(localized("--anonymous none without --users would let nobody do anything"))
        }
        if (self.tlsCert == nil) != (self.tlsKey == nil) {
            throw ValidationError(localized("--tls-cert and --tls-key go together"))
        }
        if self.tlsSelfSigned, self.tlsCert != nil {
            throw ValidationError(localized("--tls-self-signed or --tls-cert and --tls-key: not both"))
        }
        guard self.keptUploadHours >= 0, self.keptUploadHours * 3600 <= Self.longestDuration else {
            throw ValidationError("--kept-upload-hours must be 0 to \(Int(Self.longestDuration / 3600))")
        }
        guard self.uploadCheckpointBytes > 0 else {
            throw ValidationError("--upload-checkpoint-bytes must be positive")
        }
        if let metrics = self.metrics, MetricsEndpoint.parse(metrics) == nil {
            throw ValidationError("--metrics takes ADDRESS:PORT (127.0.0.1:9898, [::1]:9898), not '\(metrics)'")
        }
        guard self.maxLoginFailures > 0 else { throw ValidationError("--max-login-failures must be at least 1") }
        guard Logger.Level(rawValue: self.logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = LogfmtHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferryd")
        Self.raiseOpenFileLimit(logger: logger)

        let library = try await FileLibrary.open(
            at: self.root,
            keeping: KeptUploadPolicy(
                lifetime: .milliseconds(Int64(self.keptUploadHours * 3_600_000)),
                byteLimit: self.keptUploadBytes,
                checkpointInterval: self.uploadCheckpointBytes
            )
        )
        let accounts = try self.users.map { try UsersFile.load(from: $0) }
        let anonymous = self.anonymous ?? (accounts == nil ? .write : AnonymousAccess.none)
        let certificate: ServerCertificate?
        if let certificateFile = self.tlsCert, let keyFile = self.tlsKey {
            certificate = try ServerCertificate.load(certificateFile: certificateFile, keyFile: keyFile)
        } else if self.tlsSelfSigned {
            let names = Self.certificateNames(host: self.host)
            certificate = try library.withTLSFolder { folder in
                try ServerCertificate.selfSigned(in: folder, hostNames: names)
            }
        } else {
            certificate = nil
        }
        if accounts != nil, certificate == nil, !Serve.isLoopback(self.host) {
            logger.warning(
                "passwords and files cross the network unencrypted: add --tls-self-signed or --tls-cert and --tls-key",
                metadata: ["host": "\(self.host)"]
            )
        }
        if anonymous == .write, !Serve.isLoopback(self.host) {
            logger.warning(
                "anyone who can reach this port may upload, overwrite, delete and rename files",
                metadata: ["host": "\(self.host)", "anonymous": "write"]
            )
        }
        let configuration = ServerConfiguration(
            host: self.host,
            port: self.port,
            anonymousPermission: anonymous.permission,
            users: accounts,
            maximumLoginFailures: self.maxLoginFailures,
            maximumConnections: self.maxConnections,
            maximumConnectionsPerAddress: self.maxConnectionsPerAddress,
            handshakeTimeout: .milliseconds(Int64(self.handshakeTimeout * 1000)),
            idleTimeout: .milliseconds(Int64(self.idleTimeout * 1000)),
            maximumFileSize: self.maxFileSize,
            tls: try certificate?.makeContext()
        )
        let root = library.root.string
        let server = FerryServer(configuration: configuration, library: library, logger: logger) { address in
            if let certificate {
                print("ferryd: " + localized("TLS certificate SHA-256 fingerprint %@", "\(certificate.fingerprint)"))
            }
            let security = certificate == nil ? "" : " (TLS)"
            print("ferryd: " + localized("listening on %@%@, serving %@", address.displayString, security, root))
            fflush(nil)  // stdout may be a pipe: the line must go out now, not at exit
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server)]
        if let metrics = self.metrics, let (host, port) = MetricsEndpoint.parse(metrics) {
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            services.append(
                .init(
                    service: MetricsEndpoint(host: host, port: port, registry: registry) { address in
                        print("ferryd: " + localized("metrics on %@", "http://\(address.displayString)/metrics"))
                        fflush(nil)
                    }
                )
            )
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            // SIGHUP too: a closed terminal or a supervisor's hang-up is a request to stop, not a reason to drop
            // the uploads in flight (the default action killed ferryd on the spot, leaving a staging file).
            gracefulShutdownSignals: [.sigterm, .sigint, .sighup],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(self.gracePeriod * 1000))
        try await ServiceGroup(configuration: groupConfiguration).run()
    }

    /// Whether `host` is reachable from this machine only: a loopback address, or `localhost`.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        return (try? SocketAddress(ipAddress: bare, port: 0))?.isLoopback ?? false
    }

    /// The names a self-signed certificate is made for: this machine's, its loopback addresses, and the address
    /// ferryd listens on if it is a particular one. Clients that pin or remember the certificate do not look at
    /// them; a client that checks it against the certificate itself as an authority does.
    static func certificateNames(host: String) -> [String] {
        var names: [String] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count - 1) == 0, let end = buffer.firstIndex(of: 0), end > 0 {
            names.append(String(decoding: buffer[..<end], as: UTF8.self))
        }
        names += ["localhost", "127.0.0.1", "::1"]
        if !["0.0.0.0", "::", "localhost"].contains(host), !names.contains(host) {
            names.append(host)
        }
        return names
    }

    /// Thousands of connections need thousands of descriptors; the soft limit is often 1024.
    private static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 {
            logger.warning("could not raise the open-file limit", metadata: ["limit": "\(limit.rlim_cur)"])
        }
    }
}

/// What `--anonymous` allows.
enum AnonymousAccess: String, ExpressibleByArgument, CaseIterable {
    case none
    case read
    case write

    var permission: Permission? {
        switch self {
        case .none: nil
        case .read: .read
        case .write: .full
        }
    }
}
