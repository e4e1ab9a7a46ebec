// Harness 3: structured values derived from the fuzz input → encode → decode must give the same values, and
// re-encoding must give the same bytes. The stream of several messages is also parsed split at fuzz-chosen points.
import FerryProtocol
import FuzzSupport
import NIOCore

extension FuzzInput {
    /// A name that follows the naming rules (most of the time), so requests decode.
    mutating func name() -> String {
        let raw = self.bytes(Int(self.byte()))
        var scalars = String.UnicodeScalarView()
        for byte in raw {
            // Keep it valid: printable ASCII and a few multi-byte characters, never '/', '\', or a leading dot.
            let scalar: Unicode.Scalar =
                switch byte {
                case 0x21...0x7E where byte != UInt8(ascii: "/") && byte != UInt8(ascii: "\\"): Unicode.Scalar(byte)
                case 0xF0...0xFF: "é"
                case 0xE0...0xEF: "🚢"
                default: "x"
                }
            scalars.append(scalar)
        }
        var name = String(scalars)
        while name.utf8.count > ProtocolLimits.maximumNameLength { name.removeLast() }
        if name.isEmpty || name.hasPrefix(".") { name = "n" + name }
        while name.utf8.count > ProtocolLimits.maximumNameLength { name.removeLast() }
        return name
    }

    /// A version 4 upload token, or none (an older version's message), as a byte decides.
    mutating func token() -> UploadToken? {
        self.byte() & 1 == 1 ? UploadToken(high: self.integer(), low: self.integer()) : nil
    }

    mutating func message() -> Message {
        switch self.byte() % 17 {
        case 0:
            return .hello(
                Hello(
                    minimumVersion: self.integer(),
                    maximumVersion: self.integer(),
                    maximumFramePayload: self.integer(),
                    maximumFileSize: self.integer()
                )
            )
        case 1: return .list
        case 2:
            var request = RetrieveRequest(name: self.name(), offset: self.integer())
            if self.byte() & 1 == 1 {
                request.ifUnchanged = FileVersion(size: self.integer(), modified: self.integer())
            }
            return .retrieve(request)
        case 3:
            return .store(
                StoreRequest(
                    name: self.name(),
                    size: self.integer(),
                    offset: self.integer(),
                    options: StoreOptions(rawValue: self.byte()),
                    resumeToken: self.token()
                )
            )
        case 4: return .exit
        case 5: return .ok
        case 6:
            let code = ErrorCode(rawValue: self.integer())
            let text = String(decoding: self.bytes(Int(self.integer(UInt16.self) % 2048)), as: UTF8.self)
            return .error(ErrorReply(code: code, message: text))
        case 7:
            return .listEntries(
                (0..<Int(self.byte() % 8)).map { _ in
                    ListEntry(name: self.name(), size: self.integer(), modified: self.integer())
                }
            )
        case 8: return .listEnd(ListEnd(count: self.integer()))
        case 9:
            let size: UInt64 = self.integer()
            let offset: UInt64 = self.integer()
            return .fileInfo(FileInfo(size: max(size, offset), offset: min(size, offset), modified: self.integer()))
        case 10: return .ready(Ready(offset: self.integer(), token: self.token()))
        case 11: return .data(DataChunk(ByteBuffer(bytes: self.bytes(Int(self.integer(UInt16.self))))))
        case 12:
            return .end(
                EndOfData(
                    length: self.integer(),
                    crc32: self.integer(),
                    fileCRC32: self.byte() & 1 == 1 ? self.integer() : nil
                )
            )
        case 13: return .delete(DeleteRequest(name: self.name()))
        case 14:
            return .rename(
                RenameRequest(from: self.name(), to: self.name(), options: RenameOptions(rawValue: self.byte()))
            )
        case 15: return .auth(AuthRequest(user: self.name(), password: self.name()))
        default: return .abort
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRoundTrip(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    var messages: [Message] = []
    while !input.isAtEnd, messages.count < 64 {
        messages.append(input.message())
    }
    var stream = ByteBuffer()
    for message in messages {
        FrameSerializer.serialize(message, into: &stream)
    }
    let bytes = Array(stream.readableBytesView)
    let step = Int(bytes.first ?? 1) % 61 + 1
    var parser = FrameParser(maximumPayloadLength: Int(UInt32.max))
    var decoded: [Message] = []
    var position = 0
    while position < bytes.count {
        let end = min(bytes.count, position + step)
        parser.append(bytes: ByteBuffer(bytes: bytes[position..<end]))
        position = end
        do {
            while let frame = try parser.nextFrame() {
                decoded.append(try Message(decoding: frame))
            }
        } catch {
            preconditionFailure("a serialized message failed to parse: \(error)")
        }
    }
    for (original, back) in zip(messages, decoded) {
        if case .error(let reply) = original, reply.message.utf8.count > ProtocolLimits.maximumErrorMessageLength {
            continue  // cut at a character boundary by design
        }
        precondition(original == back, "\(original) came back as \(back)")
    }
    precondition(decoded.count == messages.count, "messages were lost or invented")
    var again = ByteBuffer()
    for message in decoded {
        FrameSerializer.serialize(message, into: &again)
    }
    precondition(Array(again.readableBytesView) == bytes, "re-encoding changed the bytes")
    return 0
}
