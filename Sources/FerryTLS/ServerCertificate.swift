import Crypto
import FerryTransport
import NIOCore
public import NIOSSL
import SwiftASN1
import X509

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// The certificate and private key a TLS server presents (SPEC.md §4.1).
public struct ServerCertificate: Sendable {
    /// The server's certificate first, then any intermediates.
    public let chain: [NIOSSLCertificate]
    public let privateKey: NIOSSLPrivateKey

    /// The fingerprint of the server's own certificate: what clients pin and remember.
    public var fingerprint: CertificateFingerprint {
        CertificateFingerprint(certificate: (try? self.chain.first?.toDERBytes()) ?? [])
    }

    /// The largest certificate or key file read: far more than any real chain, far less than memory.
    static let largestFile = 1 << 20

    /// Loads a PEM certificate chain and a PEM private key, as an operator's CA issued them.
    public static func load(certificateFile: String, keyFile: String) throws(TLSSetupError) -> ServerCertificate {
        let chainBytes = try Self.read(certificateFile, what: "certificate")
        let keyBytes = try Self.read(keyFile, what: "private key")
        return try Self.parse(chain: chainBytes, key: keyBytes, source: "\(certificateFile) and \(keyFile)")
    }

    /// The name of the file, in the server's state folder, that holds a self-signed certificate and its key.
    public static let selfSignedFileName = "self-signed.pem"

    /// The self-signed certificate kept in `folder`, made there the first time.
    ///
    /// It is made once and kept, so that its fingerprint, which clients pin and remember, survives restarts. The
    /// file (key and certificate, mode 0600) appears whole or not at all, and never replaces one
    /// (``BlockingFileIO/writeWhole(_:to:mode:exactMode:replacing:flushing:)``), so that when several servers share the folder
    /// and start at once, the first one's is everyone's. A file that anyone but this user owns or may read or write is refused, as SSH refuses a
    /// private key others may read: whoever could plant or read it could pose as the server.
    ///
    /// - Parameter folder: a path to the folder, which may be a `/proc/self/fd/N` path of a folder opened safely.
    public static func selfSigned(in folder: String, hostNames: [String]) throws(TLSSetupError) -> ServerCertificate {
        let path = folder + "/" + Self.selfSignedFileName
        if let existing = try Self.readPrivateFile(path) {
            return try Self.parse(chain: existing, key: existing, source: path)
        }
        let pem: String
        do {
            pem = try Self.makeSelfSigned(hostNames: hostNames)
        } catch {
            throw TLSSetupError("cannot make a self-signed certificate: \(error)")
        }
        // Never replacing: a server that got there first keeps its certificate, and this one uses it.
        let failure = BlockingFileIO.writeWhole(ByteBuffer(string: pem), to: path, mode: 0o600, replacing: false)
        if let failure, failure.code != EEXIST {
            throw TLSSetupError("cannot create '\(path)': \(failure)")
        }
        guard let stored = try Self.readPrivateFile(path) else {
            throw TLSSetupError("'\(path)' vanished as it was made")
        }
        return try Self.parse(chain: stored, key: stored, source: path)
    }

    /// The bytes of a private key file: not a link, owned by this user, readable and writable by nobody else; `nil`
    /// if there is no such file.
    private static func readPrivateFile(_ path: String) throws(TLSSetupError) -> [UInt8]? {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            guard errno == ENOENT else {
                throw TLSSetupError("cannot read '\(path)': \(SystemCallError(code: errno))")
            }
            return nil
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, info.st_uid == geteuid(), info.st_mode & 0o077 == 0 else {
            throw TLSSetupError(
                "'\(path)' must be a regular file that only ferryd's user may read (owner uid \(geteuid()), mode "
                    + "0600): it holds the server's private key; remove it to make a new one (clients will then "
                    + "see a new fingerprint)"
            )
        }
        switch BlockingFileIO.readSmallFile(at: path, upTo: Self.largestFile, followingLinks: false) {
        case .contents(let bytes, _):
            return Array(bytes.readableBytesView)
        default:
            throw TLSSetupError("cannot read '\(path)'")
        }
    }

    /// A new P-256 key and a certificate for it, signed by itself, valid for 20 years: PEM, key first.
    private static func makeSelfSigned(hostNames: [String]) throws -> String {
        let key = P256.Signing.PrivateKey()
        let signingKey = Certificate.PrivateKey(key)
        let name = try DistinguishedName {
            CommonName(hostNames.first ?? "ferryd")
            OrganizationName("Ferry (self-signed)")
        }
        var alternativeNames: [GeneralName] = []
        for host in hostNames {
            if let address = Self.addressBytes(host) {
                alternativeNames.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address))))
            } else {
                alternativeNames.append(.dnsName(host))
            }
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: signingKey.publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(20 * 365 * 24 * 3600),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(alternativeNames)
            },
            issuerPrivateKey: signingKey
        )
        return key.pemRepresentation + "\n" + (try certificate.serializeAsPEM().pemString) + "\n"
    }

    /// The 4 or 16 bytes of an IPv4 or IPv6 address; `nil` for a host name.
    private static func addressBytes(_ host: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    private static func parse(chain: [UInt8], key: [UInt8], source: String) throws(TLSSetupError) -> ServerCertificate {
        let certificates: [NIOSSLCertificate]
        let privateKey: NIOSSLPrivateKey
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(chain)
        } catch {
            throw TLSSetupError("no PEM certificate could be read from \(source): \(error)")
        }
        guard !certificates.isEmpty else {
            throw TLSSetupError("no PEM certificate could be read from \(source)")
        }
        do {
            privateKey = try NIOSSLPrivateKey(bytes: key, format: .pem)
        } catch {
            throw TLSSetupError("no PEM private key could be read from \(source): \(error)")
        }
        return ServerCertificate(chain: certificates, privateKey: privateKey)
    }

    private static func read(_ path: String, what: String) throws(TLSSetupError) -> [UInt8] {
        guard let bytes = try Self.readIfPresent(path) else {
            throw TLSSetupError("cannot read the \(what) '\(path)': no such file")
        }
        return bytes
    }

    /// The file's bytes; `nil` if there is no such file.
    private static func readIfPresent(_ path: String) throws(TLSSetupError) -> [UInt8]? {
        switch BlockingFileIO.readSmallFile(at: path, upTo: Self.largestFile, followingLinks: true) {
        case .contents(let bytes, _):
            return Array(bytes.readableBytesView)
        case .cannotOpen(let error) where error.code == ENOENT:
            return nil
        case .cannotOpen(let error), .cannotRead(let error):
            throw TLSSetupError("cannot read '\(path)': \(error)")
        case .larger:
            throw TLSSetupError("'\(path)' is larger than \(Self.largestFile >> 20) MiB: not a certificate or key")
        case .notRegular:
            throw TLSSetupError("'\(path)' is not a regular file")
        case .changed:
            throw TLSSetupError("'\(path)' changed while it was read")
        }
    }

    /// The server side of TLS: 1.3 only, this certificate, no client certificates.
    public func makeContext() throws(TLSSetupError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: self.chain.map { .certificate($0) },
            privateKey: .privateKey(self.privateKey)
        )
        configuration.minimumTLSVersion = .tlsv13
        configuration.maximumTLSVersion = .tlsv13
        // A close waits this long for the peer's close_notify (5 s by default): a peer that never reads must not
        // hold its connection that much longer than the linger time.
        configuration.shutdownTimeout = .seconds(1)
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("the certificate and key do not make a TLS server: \(error)")
        }
    }
}

/// Why TLS could not be set up: a sentence for the operator or user.
public struct TLSSetupError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
