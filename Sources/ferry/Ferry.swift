import ArgumentParser
import FerryClient
import FerryTLS
import FerryTransport

@main
struct Ferry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: localized("List, download and upload files on a Ferry server."),
        discussion: """
            Without a subcommand, ferry opens an interactive shell that guides you with a menu and a prompt. \
            The subcommands are for scripts: they print results on stdout, one-line errors on stderr, and exit \
            with status 0 only on success.
            """,
        subcommands: [Shell.self, List.self, Get.self, Put.self, Remove.self, Move.self],
        defaultSubcommand: Shell.self
    )

    static func main() async {
        TransferMemory.tuneAllocator()
        // `--trace=data` reads better than `--trace-data`, which ArgumentParser's flags cannot take: both are accepted.
        await Self.main(CommandLine.arguments.dropFirst().map { $0 == "--trace=data" ? "--trace-data" : $0 })
    }
}

/// The server to talk to, shared by every subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The server's host name or address.")
    var host = "127.0.0.1"

    @Option(help: "The server's TCP port.")
    var port = 8888

    @Option(
        help: """
            Log in as this user. The password comes from FERRY_PASSWORD, --password-file, or a prompt on the \
            terminal; never from the command line.
            """
    )
    var user: String?

    @Option(help: "A file whose first line is the password (keep it private).")
    var passwordFile: String?

    @Flag(help: "Send the password even over a connection that is neither encrypted nor to this machine.")
    var insecurePassword = false

    @Flag(
        help: """
            Connect with TLS. The server is trusted if its certificate is the one remembered for it (in             ~/.config/ferry/known_servers) or is vouched for by the system's authorities; the shell asks about a             server it does not know.
            """
    )
    var tls = false

    @Option(help: ArgumentHelp("Connect with TLS, trusting the authorities in this PEM file.", valueName: "file"))
    var ca: String?

    @Option(
        help: ArgumentHelp(
            "Connect with TLS, trusting only the certificate with this SHA-256 fingerprint (as ferryd prints it).",
            valueName: "fingerprint"
        )
    )
    var pin: String?

    @Option(
        help: ArgumentHelp(
            "Connect with TLS, and remember this fingerprint for the server if it is not known yet.",
            valueName: "fingerprint"
        )
    )
    var trust: String?

    @Flag(
        help: """
            Print every frame sent (→) and received (←) on stderr, as SPEC.md names them: type, flags, length, \
            whether its CRC-32 held, and its fields. DATA is summarised; --trace=data also shows its first bytes.
            """
    )
    var trace = false

    @Flag(
        name: .customLong("trace-data"),
        help: ArgumentHelp("--trace, with DATA's first 64 bytes in hex.", visibility: .hidden)
    )
    var traceData = false

    func validate() throws {
        guard (1...65_535).contains(self.port) else { throw ValidationError("--port must be between 1 and 65535") }
        guard self.passwordFile == nil || self.user != nil else {
            throw ValidationError("--password-file needs --user")
        }
        guard [self.ca != nil, self.pin != nil, self.trust != nil].filter({ $0 }).count <= 1 else {
            throw ValidationError("--ca, --pin and --trust each say whom to trust: give one")
        }
        for fingerprint in [self.pin, self.trust].compactMap({ $0 }) where CertificateFingerprint(fingerprint) == nil {
            throw ValidationError(
                "'\(fingerprint)' is not a SHA-256 fingerprint: 64 hex digits, with or without colons"
            )
        }
    }

    /// Whom TLS trusts, or `nil` without TLS.
    func serverTrust() throws -> ServerTrust? {
        if let ca = self.ca {
            return try ServerTrust.authorities(file: ca)
        }
        if let pin = self.pin.flatMap({ CertificateFingerprint($0) }) {
            return .pinned(pin)
        }
        guard self.tls || self.trust != nil else { return nil }
        guard let path = KnownServers.defaultPath else {
            throw ValidationError("neither HOME nor XDG_CONFIG_HOME is set: no known-servers file (use --pin or --ca)")
        }
        return .known(KnownServers(path: path), accepting: self.trust.flatMap { CertificateFingerprint($0) })
    }

    /// The client these options describe, with its credentials when --user is given (the password read now).
    func client() throws -> FerryClient {
        var client = FerryClient(host: self.host, port: self.port)
        if let user = self.user {
            client.credentials = Credentials(user: user, password: try self.password(for: user))
        }
        client.allowsPasswordInClear = self.insecurePassword
        client.tls = try self.serverTrust()
        if self.trace || self.traceData {
            client.trace = (
                self.traceData ? 64 : 0,
                { sent, line in
                    Terminal.writeError("ferry: trace \(sent ? "→" : "←") \(line)\n")
                }
            )
        }
        return client
    }

    /// From --password-file (which wins, being said on this command), FERRY_PASSWORD, or a prompt.
    private func password(for user: String) throws -> String {
        if let file = self.passwordFile {
            guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw ValidationError("cannot read the password file '\(file)'")
            }
            let line = contents.split(separator: "\n", omittingEmptySubsequences: false).first ?? ""
            return String(line.hasSuffix("\r") ? line.dropLast() : line)
        }
        if let password = ProcessInfo.environment("FERRY_PASSWORD"), !password.isEmpty {
            return password
        }
        guard let password = PasswordPrompt.read("password for \(user)@\(self.host): ") else {
            throw ValidationError("no terminal to ask the password on: set FERRY_PASSWORD or give --password-file")
        }
        return password
    }
}

/// The process's environment, read through the C library (ferry does not link Foundation's process info).
enum ProcessInfo {
    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
