import FerryTransport
public import NIOCore
public import NIOSSL
import SwiftASN1
import Synchronization
public import X509

/// How a client decides that the server at the other end of a TLS connection is the one it meant (SPEC.md §4.1).
public enum ServerTrust: Sendable {
    /// The server's certificate must have this fingerprint (`--pin`); nothing else is asked of it.
    case pinned(CertificateFingerprint)
    /// The server's certificate must lead to one of these authorities and name the host (`--ca FILE`).
    case authorities([Certificate], file: String)
    /// SSH's way: a server in the known-servers file must present the certificate remembered for it; any other is
    /// trusted if it leads to one of the system's authorities and names the host. A server that does neither is
    /// refused as unknown, unless its fingerprint is `accepting` (then it is remembered).
    case known(KnownServers, accepting: CertificateFingerprint?)

    /// `--ca FILE`: the PEM certificates of the authorities in `file`.
    public static func authorities(file: String) throws(TLSSetupError) -> ServerTrust {
        let text: [UInt8]
        switch BlockingFileIO.readSmallFile(at: file, upTo: ServerCertificate.largestFile, followingLinks: true) {
        case .contents(let bytes, _): text = Array(bytes.readableBytesView)
        default: throw TLSSetupError("cannot read the CA file '\(file)'")
        }
        do {
            let certificates = try NIOSSLCertificate.fromPEMBytes(text).map {
                try Certificate(derEncoded: try $0.toDERBytes())
            }
            guard !certificates.isEmpty else { throw TLSSetupError("no certificate in it") }
            return .authorities(certificates, file: file)
        } catch {
            throw TLSSetupError("the CA file '\(file)' holds no PEM certificate that can be read: \(error)")
        }
    }
}

/// Why a client refused a server's certificate: what a person must know to decide what to do.
public enum TrustFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// Neither known nor vouched for by an authority this machine trusts.
    case unknownServer(server: String, fingerprint: CertificateFingerprint, reason: String)
    /// Known, with another certificate: the loud one.
    case changedCertificate(
        server: String,
        remembered: CertificateFingerprint,
        presented: CertificateFingerprint,
        file: String,
        line: Int
    )
    /// Not the certificate `--pin` (or `--trust`) named.
    case notPinned(server: String, expected: CertificateFingerprint, presented: CertificateFingerprint)
    /// Not vouched for by the authorities of `--ca`.
    case notVouchedFor(server: String, file: String, reason: String, presented: CertificateFingerprint)
    /// No certificate, or one that cannot be read.
    case unreadableCertificate(server: String)
    /// The known-servers file could not be read or written.
    case knownServersFile(TLSSetupError)

    public var description: String {
        switch self {
        case .unknownServer(let server, let fingerprint, let reason):
            "\(server) is not a known server, and no authority this machine trusts vouches for its certificate "
                + "(\(reason)); its SHA-256 fingerprint is \(fingerprint); if that is the one ferryd printed at "
                + "start-up, add --trust \(fingerprint) to remember it (or --pin with it for this once); nothing was sent"
        case .changedCertificate(let server, let remembered, let presented, let file, let line):
            "WARNING: THE CERTIFICATE OF \(server) HAS CHANGED since it was remembered (line \(line) of \(file)): "
                + "it was \(remembered), it is now \(presented); someone may be intercepting the connection, so "
                + "nothing was sent; if the server's certificate was replaced on purpose, delete that line"
        case .notPinned(let server, let expected, let presented):
            "the certificate of \(server) is not the one pinned: expected \(expected), got \(presented); "
                + "nothing was sent"
        case .notVouchedFor(let server, let file, let reason, let presented):
            "the certificate of \(server) is not vouched for by the authorities in \(file) (\(reason)); its "
                + "fingerprint is \(presented); nothing was sent"
        case .unreadableCertificate(let server):
            "\(server) presented no certificate that can be read; nothing was sent"
        case .knownServersFile(let error):
            "\(error)"
        }
    }
}

/// The TLS side of one client connection: it checks the server's certificate as ``ServerTrust`` says, and keeps
/// what went wrong for the error message, since TLS itself reports only "handshake failed".
public final class ServerVerifier: Sendable {
    private let trust: ServerTrust
    private let host: String
    /// How the user named the server, `HOST:PORT`: the key of the known-servers file.
    private let server: String
    private let outcome = Mutex<Outcome>(Outcome())

    private struct Outcome {
        var failure: TrustFailure?
        var peerSpeaksPlainFerry = false
    }

    public init(trust: ServerTrust, host: String, server: String) {
        self.trust = trust
        self.host = host
        self.server = server
        self.hostIsAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// Whether ``host`` is an IP address rather than a name: SNI takes names only, and a certificate names an
    /// address in a field of its own.
    private let hostIsAddress: Bool

    /// Why the server's certificate was refused, if it was.
    public var failure: TrustFailure? {
        self.outcome.withLock { $0.failure }
    }

    /// Whether the server answered in Ferry without TLS (``PlainServerDetector``).
    public var peerSpeaksPlainFerry: Bool {
        self.outcome.withLock { $0.peerSpeaksPlainFerry }
    }

    func notePlainFerryPeer() {
        self.outcome.withLock { $0.peerSpeaksPlainFerry = true }
    }

    /// TLS 1.3 only; the certificate is checked by ``verify(_:promise:)``, not by the library's own rules.
    public static func makeContext() throws(TLSSetupError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        // Never consulted (the verification callback replaces them), so not loaded.
        configuration.trustRoots = .certificates([])
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("cannot set up TLS: \(error)")
        }
    }

    /// The handlers that go first in a client connection's pipeline.
    public func makeHandlers(context: NIOSSLContext) throws -> [any ChannelHandler] {
        let handler = try NIOSSLClientHandler(
            context: context,
            serverHostname: self.hostIsAddress ? nil : self.host,
            customVerificationCallback: { [self] certificates, promise in
                self.verify(certificates, promise: promise)
            }
        )
        return [PlainServerDetector(verifier: self), handler]
    }

    private func verify(_ certificates: [NIOSSLCertificate], promise: EventLoopPromise<NIOSSLVerificationResult>) {
        guard let leafBytes = try? certificates.first?.toDERBytes() else {
            promise.succeed(self.refuse(.unreadableCertificate(server: self.server)))
            return
        }
        let presented = CertificateFingerprint(certificate: leafBytes)
        switch self.trust {
        case .pinned(let expected):
            promise.succeed(
                presented == expected
                    ? .certificateVerified
                    : self.refuse(.notPinned(server: self.server, expected: expected, presented: presented))
            )
        case .authorities(let roots, let file):
            let chain = certificates
            Task {
                switch await self.validate(chain, against: CertificateStore(roots)) {
                case nil:
                    promise.succeed(.certificateVerified)
                case let reason?:
                    promise.succeed(
                        self.refuse(
                            .notVouchedFor(server: self.server, file: file, reason: reason, presented: presented)
                        )
                    )
                }
            }
        case .known(let known, let accepting):
            let remembered: (fingerprint: CertificateFingerprint, line: Int)?
            do {
                remembered = try known.entry(for: self.server)
            } catch {
                promise.succeed(self.refuse(.knownServersFile(error)))
                return
            }
            if let remembered {
                promise.succeed(
                    remembered.fingerprint == presented
                        ? .certificateVerified
                        : self.refuse(
                            .changedCertificate(
                                server: self.server,
                                remembered: remembered.fingerprint,
                                presented: presented,
                                file: known.path,
                                line: remembered.line
                            )
                        )
                )
                return
            }
            if let accepting {
                guard accepting == presented else {
                    promise.succeed(
                        self.refuse(.notPinned(server: self.server, expected: accepting, presented: presented))
                    )
                    return
                }
                do {
                    try known.remember(presented, for: self.server)
                    promise.succeed(.certificateVerified)
                } catch {
                    promise.succeed(self.refuse(.knownServersFile(error)))
                }
                return
            }
            let chain = certificates
            Task {
                switch await self.validate(chain, against: CertificateStore.systemTrustRoots) {
                case nil:
                    promise.succeed(.certificateVerified)
                case let reason?:
                    promise.succeed(
                        self.refuse(.unknownServer(server: self.server, fingerprint: presented, reason: reason))
                    )
                }
            }
        }
    }

    /// `nil` if the chain leads to one of `roots` and its certificate names the host; otherwise why not.
    private func validate(_ presented: [NIOSSLCertificate], against roots: CertificateStore) async -> String? {
        let chain: [Certificate]
        do {
            chain = try presented.map { try Certificate(derEncoded: try $0.toDERBytes()) }
        } catch {
            return "its certificate cannot be parsed: \(error)"
        }
        guard let leaf = chain.first else { return "no certificate" }
        var verifier = Verifier(rootCertificates: roots) {
            RFC5280Policy()
            ServerIdentityPolicy(
                serverHostname: self.hostIsAddress ? nil : self.host,
                serverIP: self.hostIsAddress ? self.host : nil
            )
            ServerAuthenticationPolicy()
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst())) {
        case .validCertificate:
            return nil
        case .couldNotValidate(let failures):
            return failures.first.map { "\($0.policyFailureReason)" } ?? "no chain to a trusted authority"
        }
    }

    private func refuse(_ failure: TrustFailure) -> NIOSSLVerificationResult {
        self.outcome.withLock { $0.failure = failure }
        return .failed
    }
}

/// A certificate that says what it may be used for must say "server authentication" (or anything): one issued for
/// e-mail or for clients that names the host is not a server's. Neither of swift-certificates' policies checks it.
struct ServerAuthenticationPolicy: VerifierPolicy {
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.extendedKeyUsage]

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        let usage: ExtendedKeyUsage?
        do {
            usage = try chain.leaf.extensions.extendedKeyUsage
        } catch {
            return .failsToMeetPolicy(reason: "its extended key usage cannot be read")
        }
        guard let usage, !usage.contains(.serverAuth), !usage.contains(.any) else { return .meetsPolicy }
        return .failsToMeetPolicy(reason: "the certificate is not for server authentication")
    }
}
