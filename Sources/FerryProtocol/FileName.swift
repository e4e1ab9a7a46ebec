/// The naming rules of a Ferry library (SPEC.md §6).
///
/// The library is one flat folder, so a name may never say where a file lives, only what it is called:
/// no separators, no `.`/`..`, nothing hidden, nothing a terminal would interpret. The rules are part of the
/// protocol, not of one server, so a client refuses a bad name before sending it and refuses a bad name in
/// a listing, and no peer can steer the other outside its folder.
public enum FileName {
    /// A rule a name broke. Its description is the sentence shown to the person who typed the name.
    public enum Violation: Error, Hashable, Sendable, CustomStringConvertible {
        case empty
        case tooLong(byteCount: Int)
        case notUTF8
        case containsSlash
        case containsBackslash
        case containsNUL
        case containsControlCharacter
        case dotOrDotDot
        case leadingDot

        public var description: String {
            switch self {
            case .empty: "a name must not be empty"
            case .tooLong(let count):
                "a name must be at most \(ProtocolLimits.maximumNameLength) UTF-8 bytes (this one has \(count))"
            case .notUTF8: "a name must be valid UTF-8"
            case .containsSlash: "a name must not contain '/'"
            case .containsBackslash: "a name must not contain '\\'"
            case .containsNUL: "a name must not contain NUL"
            case .containsControlCharacter: "a name must not contain control characters"
            case .dotOrDotDot: "a name must not be '.' or '..'"
            case .leadingDot: "a name must not start with '.'"
            }
        }
    }

    /// The first rule `bytes` breaks, or the valid name.
    public static func validate(_ bytes: [UInt8]) -> Result<String, Violation> {
        bytes.withUnsafeBytes { self.validate($0) }
    }

    /// The first rule `bytes` breaks, or the valid name: for a name still in the frame it arrived in.
    ///
    /// Every forbidden character is ASCII except the C1 controls, which UTF-8 spells `C2 80`…`C2 9F`, so no scalar
    /// needs decoding: the common name, printable ASCII, passes one tight loop and becomes a `String` without being
    /// validated as UTF-8 again; only the others go through the rules byte by byte. A listing validates every name
    /// it carries: 10,000 names through `unicodeScalars` cost a client more than the listing's transfer, and three
    /// passes per name with an array each were still a tenth of `ferry list`'s instructions.
    public static func validate(_ bytes: UnsafeRawBufferPointer) -> Result<String, Violation> {
        guard !bytes.isEmpty else { return .failure(.empty) }
        guard bytes.count <= ProtocolLimits.maximumNameLength else {
            return .failure(.tooLong(byteCount: bytes.count))
        }
        // The common name is printable ASCII with nothing forbidden: one tight loop, and the rules' own loop only
        // for the others.
        let plain = !bytes.contains(where: { $0 < 0x20 || $0 >= 0x7F || $0 == 0x2F || $0 == 0x5C })
        var broken: Violation?
        var isASCII = plain
        if !plain {
            isASCII = true
            var previous: UInt8 = 0
            for byte in bytes {
                if byte >= 0x80 { isASCII = false }
                if broken == nil {
                    switch byte {
                    case UInt8(ascii: "/"): broken = .containsSlash
                    case UInt8(ascii: "\\"): broken = .containsBackslash
                    case 0: broken = .containsNUL
                    // Unicode's Cc category: C0 and DEL, and C1 (U+0080…U+009F, a continuation byte after C2).
                    case 0x01..<0x20, 0x7F: broken = .containsControlCharacter
                    case 0x80...0x9F where previous == 0xC2: broken = .containsControlCharacter
                    default: break
                    }
                }
                previous = byte
            }
        }
        let name: String
        if isASCII {
            name = String(decoding: bytes, as: UTF8.self)
        } else if let decoded = String(validating: bytes, as: UTF8.self) {
            name = decoded
        } else {
            return .failure(.notUTF8)
        }
        if bytes.count <= 2, bytes.allSatisfy({ $0 == UInt8(ascii: ".") }) { return .failure(.dotOrDotDot) }
        if let broken { return .failure(broken) }
        if bytes.first == UInt8(ascii: ".") { return .failure(.leadingDot) }
        return .success(name)
    }

    public static func validate(_ name: String) -> Result<String, Violation> {
        self.validate(Array(name.utf8))
    }
}
