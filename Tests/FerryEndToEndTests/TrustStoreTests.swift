import FerryTLS
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fingerprints as people paste them, and the known-servers file as ferry keeps it.
@Suite("Fingerprints and known servers")
struct TrustStoreTests {
    static let written =
        "F0:BF:D4:58:D9:25:C3:E1:B1:D3:CD:7C:B2:97:7B:19:58:8E:17:B5:80:03:79:B1:52:B4:08:8A:78:E0:6D:0B"

    @Test func fingerprintsAreReadAsPeoplePasteThem() throws {
        let fingerprint = try #require(CertificateFingerprint(Self.written))
        #expect(fingerprint.description == Self.written)
        for pasted in [
            Self.written.lowercased(),
            Self.written.replacingOccurrences(of: ":", with: ""),
            "SHA256:" + Self.written,
            "sha256 Fingerprint=" + Self.written,
            "  \(Self.written)\n",
        ] {
            #expect(CertificateFingerprint(pasted) == fingerprint, "\(pasted)")
        }
        for malformed in [
            "", "F0:BF", Self.written + ":00", String(Self.written.dropLast()), "zz" + Self.written.dropFirst(2),
        ] {
            #expect(CertificateFingerprint(malformed) == nil, "\(malformed)")
        }
        // The digest of the DER bytes, as openssl computes it: SHA-256 of "abc" is the FIPS 180-2 example.
        #expect(
            CertificateFingerprint(certificate: Array("abc".utf8)).description
                == "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        )
    }

    @Test func knownServersAreRememberedPrivatelyOnePerServer() throws {
        let folder = Scratch.makeDirectory("config")
        let known = KnownServers(path: folder.appendingPathComponent("ferry/known_servers").path)
        #expect(try known.entry(for: "a:1") == nil, "no file yet: nothing known")
        let first = try #require(CertificateFingerprint(String(repeating: "11", count: 32)))
        let second = try #require(CertificateFingerprint(String(repeating: "22", count: 32)))
        try known.remember(first, for: "a:1")
        try known.remember(first, for: "[::1]:8888")
        try known.remember(second, for: "a:1")
        #expect(try known.entry(for: "a:1")?.fingerprint == second, "replaced, not added")
        #expect(try known.entry(for: "[::1]:8888")?.fingerprint == first)
        #expect(try known.entry(for: "a:2") == nil)
        let text = try String(contentsOfFile: known.path, encoding: .utf8)
        #expect(text.components(separatedBy: "a:1 ").count == 2, "one line per server: \(text)")
        var info = stat()
        #expect(stat(known.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(stat(folder.appendingPathComponent("ferry").path, &info) == 0 && info.st_mode & 0o777 == 0o700)

        try "a:1 not-a-fingerprint\n".write(toFile: known.path, atomically: true, encoding: .utf8)
        #expect(throws: TLSSetupError.self) { try known.entry(for: "a:1") }
    }
}
