public import NIOCore

/// One direction of a connection as a learner reads it (`ferry --trace`, `ferryd --log-level trace`): the magic, then
/// each frame on a line of its own with its header as it came (type, flags, length), whether its CRC-32 held, and its
/// message's fields under SPEC.md's names. DATA is summarised by its length and CRC-32, or with `dataBytes` more,
/// also shown as hex.
///
/// It reassembles frames however the bytes arrive, holding at most one frame; it never fails, and never affects the
/// connection it watches: bytes it cannot follow end the trace with a line that says why.
public struct FrameTrace: Sendable {
    /// How many bytes of each DATA payload to show as hex (0: none).
    public let dataBytes: Int
    private var pending = ByteBuffer()
    private var magicSeen = 0
    private var stopped = false

    /// Frames larger than this are not held to be traced (no receiver accepts more than 4 GiB; Ferry's, 1 MiB).
    public static let largestFrame = 64 << 20

    public init(dataBytes: Int = 0) {
        self.dataBytes = dataBytes
    }

    /// Takes the next bytes of the direction; returns a line for each thing they completed.
    public mutating func consume(_ bytes: ByteBuffer) -> [String] {
        guard !self.stopped else { return [] }
        var bytes = bytes
        self.pending.writeBuffer(&bytes)
        var lines: [String] = []
        if self.magicSeen < Handshake.magic.count {
            while self.magicSeen < Handshake.magic.count, let byte = self.pending.readInteger(as: UInt8.self) {
                guard byte == Handshake.magic[self.magicSeen] else {
                    self.stopped = true
                    return [
                        "not the magic (byte \(self.magicSeen) is 0x\(Self.hex(byte))): not Ferry, nothing more traced"
                    ]
                }
                self.magicSeen += 1
            }
            guard self.magicSeen == Handshake.magic.count else { return [] }
            lines.append("magic \(Handshake.magic.map(Self.hex).joined(separator: " "))")
        }
        while self.pending.readableBytes >= FrameLayout.headerLength {
            let start = self.pending.readerIndex
            guard let type = self.pending.getInteger(at: start, as: UInt8.self),
                let flags = self.pending.getInteger(at: start + 1, as: UInt8.self),
                let length = self.pending.getInteger(at: start + 2, as: UInt64.self)
            else { break }
            guard length <= UInt64(Self.largestFrame) else {
                self.stopped = true
                lines.append("\(FrameType(rawValue: type)) length \(length): too large to follow; nothing more traced")
                break
            }
            let total = FrameLayout.overhead + Int(length)
            guard self.pending.readableBytes >= total,
                let whole = self.pending.readSlice(length: total)
            else { break }
            lines.append(self.describe(whole, type: FrameType(rawValue: type), flags: flags, length: Int(length)))
        }
        self.pending.discardReadBytes()
        return lines
    }

    /// `TYPE [flags 0x00, N bytes, CRC-32 ok] field=value …`
    private func describe(_ whole: ByteBuffer, type: FrameType, flags: UInt8, length: Int) -> String {
        let covered = whole.getSlice(at: whole.readerIndex, length: FrameLayout.headerLength + length) ?? ByteBuffer()
        let declared = whole.getInteger(at: whole.readerIndex + FrameLayout.headerLength + length, as: UInt32.self) ?? 0
        let actual = CRC32.checksum(covered)
        let payload =
            whole.getSlice(at: whole.readerIndex + FrameLayout.headerLength, length: length) ?? ByteBuffer()
        let check =
            declared == actual ? "CRC-32 ok" : "CRC-32 BAD: \(CRC32.hex(declared)) sent, \(CRC32.hex(actual)) computed"
        let header = "\(type) [flags 0x\(Self.hex(flags)), \(length) bytes, \(check)]"
        let fields: String
        do {
            fields = Self.fields(
                of: try Message(decoding: Frame(type: type, flags: flags, payload: payload)),
                self.dataBytes
            )
        } catch {
            fields = type.rawValue >= 0x80 ? "(optional, skipped)" : "(cannot decode: \(error))"
        }
        return fields.isEmpty ? header : header + " " + fields
    }

    /// The message's fields, named as SPEC.md §5 names them.
    static func fields(of message: Message, _ dataBytes: Int) -> String {
        switch message {
        case .hello(let hello):
            return "min_version=\(hello.minimumVersion) max_version=\(hello.maximumVersion) "
                + "max_frame_payload=\(hello.maximumFramePayload) max_file_size=\(hello.maximumFileSize)"
                + (hello.login == .none ? "" : " login=\(hello.login)")
        case .list, .exit, .ok, .abort:
            return ""
        case .retrieve(let request):
            return "offset=\(request.offset) name=\(Self.quoted(request.name))"
                + (request.ifUnchanged.map { " if_size=\($0.size) if_modified=\($0.modified)" } ?? "")
        case .store(let request):
            return "size=\(request.size) offset=\(request.offset) options=0x\(Self.hex(request.options.rawValue)) "
                + "name=\(Self.quoted(request.name))" + (request.resumeToken.map { " token=\($0)" } ?? "")
        case .delete(let request):
            return "name=\(Self.quoted(request.name))"
        case .rename(let request):
            return "options=0x\(Self.hex(request.options.rawValue)) from=\(Self.quoted(request.from)) "
                + "to=\(Self.quoted(request.to))"
        case .auth(let request):
            return "user=\(Self.quoted(request.user)) password=<\(request.password.utf8.count) bytes, not shown>"
        case .error(let reply):
            return "code=\(reply.code.rawValue) (\(reply.code.name)) message=\(Self.quoted(reply.message))"
        case .listEntries(let entries):
            let shown = entries.prefix(3).map { "\(Self.quoted($0.name)) \($0.size) B" }.joined(separator: ", ")
            return "count=\(entries.count)" + (entries.isEmpty ? "" : " [\(shown)\(entries.count > 3 ? ", …" : "")]")
        case .listEnd(let end):
            return "count=\(end.count)"
        case .fileInfo(let info):
            return "size=\(info.size) offset=\(info.offset) modified=\(info.modified)"
        case .ready(let ready):
            return "offset=\(ready.offset)" + (ready.token.map { " token=\($0)" } ?? "")
        case .data(let chunk):
            var text = "payload CRC-32 \(CRC32.hex(chunk.crc32))"
            if dataBytes > 0,
                let shown = chunk.bytes.getBytes(
                    at: chunk.bytes.readerIndex,
                    length: min(dataBytes, chunk.bytes.readableBytes)
                )
            {
                text +=
                    " bytes=" + shown.map(Self.hex).joined(separator: " ")
                    + (chunk.bytes.readableBytes > shown.count ? " …" : "")
            }
            return text
        case .end(let end):
            return "length=\(end.length) crc=\(CRC32.hex(end.crc32))"
                + (end.fileCRC32.map { " file_crc=\(CRC32.hex($0))" } ?? "")
        }
    }

    private static func quoted(_ text: String) -> String {
        "\"" + text.escapingControlCharacters + "\""
    }

    private static func hex(_ byte: UInt8) -> String {
        byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
    }
}
