import FerryProtocol
import NIOCore
import Testing

@Suite("Message payloads")
struct MessageDecodingTests {
    private func frame(_ type: FrameType, _ payload: [UInt8]) -> Frame {
        Frame(type: type, payload: ByteBuffer(bytes: payload))
    }

    private func decodeError(_ type: FrameType, _ payload: [UInt8]) -> FerryProtocolError? {
        do {
            _ = try Message(decoding: self.frame(type, payload))
            return nil
        } catch {
            return error
        }
    }

    @Test(
        arguments: SampleMessages.all.filter { message in
            if case .data = message { return false }
            return true
        }
    )
    func everyTruncationIsMalformed(_ message: Message) throws {
        let bytes = SampleMessages.encoded(message)
        let payload = Array(bytes[FrameLayout.headerLength..<(bytes.count - FrameLayout.trailerLength)])
        // Cut right before its appended fields (SPEC.md §10), a message is the older version's, and whole.
        let older = Self.withoutAppendedFields(message)
        let olderLength = older.map { SampleMessages.encoded($0).count - FrameLayout.overhead }
        for length in 0..<payload.count {
            if let older, length == olderLength {
                #expect(try Message(decoding: self.frame(message.frameType, Array(payload.prefix(length)))) == older)
                continue
            }
            let error = self.decodeError(message.frameType, Array(payload.prefix(length)))
            #expect(
                error?.kind == .malformedPayload,
                "\(message.frameType) cut to \(length) bytes: \(String(describing: error))"
            )
        }
    }

    /// The message as an older version wrote it: without the fields later versions appended.
    private static func withoutAppendedFields(_ message: Message) -> Message? {
        switch message {
        case .hello(var hello) where hello.login != .none:
            hello.login = .none
            return .hello(hello)
        case .retrieve(var request) where request.ifUnchanged != nil:
            request.ifUnchanged = nil
            return .retrieve(request)
        case .store(var request) where request.resumeToken != nil:
            request.resumeToken = nil
            return .store(request)
        case .ready(var ready) where ready.token != nil:
            ready.token = nil
            return .ready(ready)
        case .end(var end) where end.fileCRC32 != nil:
            end.fileCRC32 = nil
            return .end(end)
        default:
            return nil
        }
    }

    @Test func trailingBytesAreIgnoredForExtensibility() throws {
        let ready = Ready(offset: 5, token: UploadToken(high: 1, low: 2))
        var payload = Array(SampleMessages.encoded(.ready(ready)).dropFirst(FrameLayout.headerLength).dropLast(4))
        payload += [1, 2, 3]
        #expect(try Message(decoding: self.frame(.ready, payload)) == .ready(ready))
        let end = EndOfData(length: 1, crc32: 2, fileCRC32: 3)
        payload = Array(SampleMessages.encoded(.end(end)).dropFirst(FrameLayout.headerLength).dropLast(4)) + [9]
        #expect(try Message(decoding: self.frame(.end, payload)) == .end(end))
    }

    @Test func impossibleEntryCountIsRefusedBeforeAllocating() {
        // count = 4 billion in a 4-byte payload.
        let error = self.decodeError(.listEntries, [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(error?.kind == .malformedPayload)
    }

    @Test func fileInfoOffsetBeyondSizeIsMalformed() {
        var payload = ByteBuffer()
        payload.writeInteger(UInt64(10))
        payload.writeInteger(UInt64(11))
        payload.writeInteger(Int64(0))
        #expect(self.decodeError(.fileInfo, Array(payload.readableBytesView))?.kind == .malformedPayload)
    }

    @Test func listingWithAnInvalidNameIsMalformed() {
        var payload = ByteBuffer()
        payload.writeInteger(UInt32(1))
        payload.writeInteger(UInt64(1))
        payload.writeInteger(Int64(1))
        payload.writeInteger(UInt16(4))
        payload.writeString("../x")
        #expect(self.decodeError(.listEntries, Array(payload.readableBytesView))?.kind == .malformedPayload)
    }

    static let badNames: [(name: [UInt8], rule: FileName.Violation)] = [
        ([], .empty),
        (Array("../x".utf8), .containsSlash),
        (Array("/etc/passwd".utf8), .containsSlash),
        (Array("a/b".utf8), .containsSlash),
        (Array("a\\b".utf8), .containsBackslash),
        (Array(".hidden".utf8), .leadingDot),
        (Array(".".utf8), .dotOrDotDot),
        (Array("..".utf8), .dotOrDotDot),
        ([0x61, 0x00, 0x62], .containsNUL),
        (Array("tab\there".utf8), .containsControlCharacter),
        (Array("bell\u{7}".utf8), .containsControlCharacter),
        (Array("del\u{7F}".utf8), .containsControlCharacter),
        (Array("c1\u{85}".utf8), .containsControlCharacter),
        (Array("\u{80}first".utf8), .containsControlCharacter),
        (Array("last\u{9F}".utf8), .containsControlCharacter),
        (Array("a/\u{1}".utf8), .containsSlash),
        (Array("\u{1}a/".utf8), .containsControlCharacter),
        ([0x2E, 0xFF], .notUTF8),
        ([0x2E, 0x2F], .containsSlash),
        ([0x66, 0xFF, 0x66], .notUTF8),
        ([0xC3], .notUTF8),
        (Array(repeating: 0x61, count: 256), .tooLong(byteCount: 256)),
        (Array(repeating: 0x61, count: 300), .tooLong(byteCount: 300)),
    ]

    @Test func badNamesAreRefusedWithTheRuleTheyBroke() {
        for (name, rule) in Self.badNames {
            #expect(FileName.validate(name) == .failure(rule), "\(name)")
            var payload = ByteBuffer()
            payload.writeInteger(UInt64(0))
            payload.writeInteger(UInt16(name.count))
            payload.writeBytes(name)
            let error = self.decodeError(.retrieve, Array(payload.readableBytesView))
            #expect(error?.kind == .invalidName)
            #expect(error?.errorCode == .invalidName)
            #expect(error?.errorCode.closesConnection == false)
            #expect(error?.detail.contains(rule.description) == true, "\(String(describing: error))")
        }
    }

    @Test func goodNamesAreAccepted() {
        for name in [
            "a", "report.pdf", "日本語", "x..y", "a.", "with space", "emoji🚢", String(repeating: "é", count: 127),
            "nbsp\u{A0}", "\u{100}", "\u{2080}", "line\u{2028}sep", "ÿ",
        ] {
            #expect(FileName.validate(name) == .success(name))
        }
    }

    /// The naming rules as SPEC.md §6 states them, one Unicode scalar at a time: the validator scans bytes
    /// instead, and must agree with this on every input, down to which rule it names.
    private func referenceRule(_ bytes: [UInt8]) -> Result<String, FileName.Violation> {
        guard !bytes.isEmpty else { return .failure(.empty) }
        guard bytes.count <= ProtocolLimits.maximumNameLength else { return .failure(.tooLong(byteCount: bytes.count)) }
        guard let name = String(validating: bytes, as: UTF8.self) else { return .failure(.notUTF8) }
        if name == "." || name == ".." { return .failure(.dotOrDotDot) }
        for scalar in name.unicodeScalars {
            switch scalar {
            case "/": return .failure(.containsSlash)
            case "\\": return .failure(.containsBackslash)
            case "\0": return .failure(.containsNUL)
            case _ where scalar.properties.generalCategory == .control: return .failure(.containsControlCharacter)
            default: continue
            }
        }
        return bytes.first == UInt8(ascii: ".") ? .failure(.leadingDot) : .success(name)
    }

    @Test func theByteScanAgreesWithTheRulesScalarByScalar() {
        // Bytes drawn mostly from those the rules single out (C0, DEL, C2 and its continuations, '.', '/', '\\')
        // and from multi-byte lead and continuation bytes, so that broken and valid UTF-8 both come up often.
        let interesting: [UInt8] = [
            0x00, 0x01, 0x1F, 0x20, 0x2E, 0x2F, 0x5C, 0x61, 0x7E, 0x7F, 0x80, 0x85, 0x9F, 0xA0, 0xBF, 0xC2, 0xC3,
            0xE2, 0xF0, 0xFF,
        ]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...6, using: &generator)
            let bytes = (0..<length).map { _ in
                Bool.random(using: &generator)
                    ? interesting.randomElement(using: &generator) ?? 0
                    : UInt8.random(in: 0...255, using: &generator)
            }
            #expect(FileName.validate(bytes) == self.referenceRule(bytes), "\(bytes)")
        }
    }

    @Test func longErrorMessagesAreCutAtACharacterBoundary() throws {
        let message = String(repeating: "é", count: 2_000)
        let bytes = SampleMessages.encoded(.error(ErrorReply(code: .storageFailure, message: message)))
        let decoded = try FrameParser.decodeAll(bytes, pieces: [bytes.count])
        guard case .error(let reply) = decoded.first else {
            Issue.record("expected ERROR")
            return
        }
        #expect(reply.message.utf8.count == ProtocolLimits.maximumErrorMessageLength)
        #expect(reply.message == String(repeating: "é", count: ProtocolLimits.maximumErrorMessageLength / 2))
    }

    @Test func errorCodeRangesDecideWhetherTheConnectionCloses() {
        #expect(!ErrorCode.noSuchFile.closesConnection)
        #expect(!ErrorCode(rawValue: 199).closesConnection)
        #expect(ErrorCode.badChecksum.closesConnection)
        #expect(ErrorCode(rawValue: 250).closesConnection)
    }
}
