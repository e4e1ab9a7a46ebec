import FerryProtocol
import NIOCore
import Testing

/// One or more values of every message type, edge cases included, shared by the codec tests.
enum SampleMessages {
    static let all: [Message] = [
        .hello(Hello(minimumVersion: 1, maximumVersion: 1, maximumFramePayload: 1 << 20, maximumFileSize: .max)),
        .hello(Hello(minimumVersion: 1, maximumVersion: 7, maximumFramePayload: 65_536, maximumFileSize: 0)),
        .list,
        .retrieve(RetrieveRequest(name: "report.pdf")),
        .retrieve(RetrieveRequest(name: "日本語 ファイル.txt", offset: .max)),
        .store(StoreRequest(name: "a", size: 0)),
        .store(StoreRequest(name: "backup.tar", size: 1 << 40, offset: 3, options: .overwrite)),
        .store(StoreRequest(name: String(repeating: "n", count: 255), size: 1)),
        .store(
            StoreRequest(
                name: "resumed.iso",
                size: 9 << 30,
                offset: 9 << 30,
                resumeToken: UploadToken(high: 0x0123_4567_89ab_cdef, low: .max)
            )
        ),
        .exit,
        .ok,
        .error(ErrorReply(code: .noSuchFile, message: "no such file: 'x'")),
        .error(ErrorReply(code: .unknownFrameType, message: "")),
        .error(ErrorReply(code: ErrorCode(rawValue: 65_535), message: "ünïcödé ✓")),
        .listEntries([]),
        .listEntries([
            ListEntry(name: "a.txt", size: 0, modified: 0),
            ListEntry(name: "b", size: .max, modified: .min),
            ListEntry(name: "c d", size: 12, modified: 1_700_000_000_123_456_789),
        ]),
        .listEnd(ListEnd(count: 0)),
        .listEnd(ListEnd(count: 10_000)),
        .fileInfo(FileInfo(size: 0, offset: 0, modified: -1)),
        .fileInfo(FileInfo(size: 5_000_000_000, offset: 4_999_999_999, modified: 42)),
        .ready(Ready()),
        .ready(Ready(offset: 77)),
        .ready(Ready(offset: 1 << 33, token: UploadToken(high: 0, low: 1))),
        .data(DataChunk(ByteBuffer())),
        .data(DataChunk(ByteBuffer(string: "##"))),
        .data(DataChunk(ByteBuffer(bytes: Array(0...255)))),
        .data(DataChunk(ByteBuffer(bytes: (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }))),
        .end(EndOfData(length: 0, crc32: 0)),
        .end(EndOfData(length: .max, crc32: 0xCBF4_3926)),
        .abort,
    ]

    /// The messages as one stream of frames.
    static func encoded(_ messages: [Message]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for message in messages {
            FrameSerializer.serialize(message, into: &buffer)
        }
        return buffer
    }

    static func encoded(_ message: Message) -> [UInt8] {
        var buffer = self.encoded([message])
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }
}

extension FrameParser {
    /// A parser that accepts every sample.
    static func permissive() -> FrameParser {
        FrameParser(maximumPayloadLength: 1 << 20)
    }

    /// Every message in `stream`, fed in pieces of the given sizes (cycled).
    /// Feeds `stream` to a parser in pieces of the given lengths (cycled), and collects the messages. With
    /// `appendsPerParse` above 1, several pieces are appended before the parser is asked for frames.
    static func decodeAll(_ stream: [UInt8], pieces: [Int], appendsPerParse: Int = 1) throws -> [Message] {
        var parser = FrameParser.permissive()
        var messages: [Message] = []
        var index = 0
        var piece = 0
        while index < stream.count {
            let length = min(max(pieces[piece % pieces.count], 1), stream.count - index)
            piece += 1
            parser.append(bytes: ByteBuffer(bytes: stream[index..<(index + length)]))
            index += length
            guard piece % max(appendsPerParse, 1) == 0 || index == stream.count else { continue }
            while let frame = try parser.nextFrame() {
                messages.append(try Message(decoding: frame))
            }
        }
        #expect(parser.bufferedByteCount == 0)
        return messages
    }
}
