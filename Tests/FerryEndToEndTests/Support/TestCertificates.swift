import Crypto
import Foundation
import SwiftASN1
import X509

/// Certificates made for a test: an authority, and a server certificate it issues for 127.0.0.1.
struct TestCertificates {
    /// The authority's certificate, PEM: what `ferry --ca` reads.
    var authorityPEM: String
    /// The server's certificate and key, PEM: what `ferryd --tls-cert` and `--tls-key` read.
    var serverCertificatePEM: String
    var serverKeyPEM: String

    /// - Parameter usage: what the server's certificate says it is for (a server's is `.serverAuth`).
    static func make(
        authorityName: String = "Ferry Test CA",
        serverAddress: String = "127.0.0.1",
        usage: ExtendedKeyUsage.Usage = .serverAuth
    ) throws -> TestCertificates {
        let authorityKey = P256.Signing.PrivateKey()
        let authorityName = try DistinguishedName { CommonName(authorityName) }
        let now = Date()
        let authority = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(authorityKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(24 * 3600),
            issuer: authorityName,
            subject: authorityName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(authorityKey)
        )
        let serverKey = P256.Signing.PrivateKey()
        let serverName = try DistinguishedName { CommonName(serverAddress) }
        let address = serverAddress.split(separator: ".").compactMap { UInt8($0) }
        let server = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(serverKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(24 * 3600),
            issuer: authorityName,
            subject: serverName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([usage])
                SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: ArraySlice(address)))])
            },
            issuerPrivateKey: .init(authorityKey)
        )
        return TestCertificates(
            authorityPEM: try authority.serializeAsPEM().pemString,
            serverCertificatePEM: try server.serializeAsPEM().pemString,
            serverKeyPEM: serverKey.pemRepresentation
        )
    }
}
