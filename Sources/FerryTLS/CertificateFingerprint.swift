import Crypto

/// The SHA-256 digest of a certificate's DER encoding: what a person compares, pins and remembers.
///
/// It is written the way `openssl x509 -noout -fingerprint -sha256` writes it (upper-case hex pairs joined by
/// colons), so an operator can check the one ferryd prints against the certificate file with standard tools.
/// Parsing is lenient about what people paste: upper or lower case, with or without the colons, with or without a
/// leading `SHA256:` or `sha256 Fingerprint=`.
public struct CertificateFingerprint: Hashable, Sendable, CustomStringConvertible {
    /// The 32 bytes of the digest.
    public let bytes: [UInt8]

    /// The fingerprint of the certificate whose DER encoding is `certificate`.
    public init(certificate: some Sequence<UInt8>) {
        var hasher = SHA256()
        hasher.update(data: Array(certificate))
        self.bytes = Array(hasher.finalize())
    }

    /// Parses a fingerprint a person typed or pasted; `nil` if it is not 64 hex digits (colons and a leading
    /// `SHA256:` or `sha256 Fingerprint=` aside).
    public init?(_ text: some StringProtocol) {
        var digits = Substring(text.trimmingWhitespace)
        if let equals = digits.lastIndex(of: "=") {
            digits = digits[digits.index(after: equals)...]
        } else if digits.lowercased().hasPrefix("sha256:") {
            digits = digits.dropFirst("sha256:".count)
        }
        var bytes: [UInt8] = []
        var high: UInt8? = nil
        for character in digits.utf8 where character != UInt8(ascii: ":") {
            guard let nibble = Self.nibble(character) else { return nil }
            if let pending = high {
                bytes.append(pending << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
            guard bytes.count <= 32 else { return nil }
        }
        guard high == nil, bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// `AB:CD:…`, 32 pairs.
    public var description: String {
        self.bytes.map { byte in
            let digits = Array("0123456789ABCDEF".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined(separator: ":")
    }

    private static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension StringProtocol {
    var trimmingWhitespace: Substring {
        let text = Substring(self)
        let start = text.firstIndex { !$0.isWhitespace } ?? text.endIndex
        let end = text.lastIndex { !$0.isWhitespace }.map { text.index(after: $0) } ?? start
        return text[start..<end]
    }
}
