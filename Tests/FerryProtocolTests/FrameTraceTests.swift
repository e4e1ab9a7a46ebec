import FerryProtocol
import NIOCore
import Testing

/// The trace a learner reads (`ferry --trace`): one line per frame, under SPEC.md's names, however the bytes arrive.
@Suite("Frame trace")
struct FrameTraceTests {
    private static func frame(_ message: Message) -> [UInt8] {
        var buffer = ByteBuffer()
        FrameSerializer.serialize(message, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test func aSessionArrivingByteByByteIsTracedFrameByFrame() {
        let stream =
            Handshake.magic
            + Self.frame(.store(StoreRequest(name: "a b.txt", size: 3, options: .overwrite)))
            + Self.frame(.data(DataChunk(ByteBuffer(string: "##\n"))))
            + Self.frame(.end(EndOfData(length: 3, crc32: 0x9B36_BFD4, fileCRC32: 0x9B36_BFD4)))
            + Self.frame(.error(ErrorReply(code: .noSuchFile, message: "no such file: 'x\u{1b}[2J'")))
        var trace = FrameTrace(dataBytes: 2)
        var lines: [String] = []
        for byte in stream {
            lines += trace.consume(ByteBuffer(bytes: [byte]))
        }
        #expect(
            lines == [
                "magic 89 46 45 52 52 59 0d 0a",
                "STOR [flags 0x00, 26 bytes, CRC-32 ok] size=3 offset=0 options=0x01 name=\"a b.txt\"",
                "DATA [flags 0x00, 3 bytes, CRC-32 ok] payload CRC-32 0x9b36bfd4 bytes=23 23 …",
                "END [flags 0x00, 16 bytes, CRC-32 ok] length=3 crc=0x9b36bfd4 file_crc=0x9b36bfd4",
                "ERROR [flags 0x00, 25 bytes, CRC-32 ok] code=100 (no such file) "
                    + "message=\"no such file: 'x\\u{1b}[2J'\"",
            ]
        )
    }

    @Test func aCorruptedFrameIsShownWithBothCRCsAndAStrangerEndsTheTrace() {
        var corrupted = Self.frame(.list)
        corrupted[corrupted.count - 1] ^= 0x01
        var trace = FrameTrace()
        let lines = trace.consume(ByteBuffer(bytes: Handshake.magic + corrupted + Self.frame(.exit)))
        #expect(lines.count == 3)
        #expect(lines[1].hasPrefix("LIST [flags 0x00, 0 bytes, CRC-32 BAD: 0xc424e99f sent, 0xc424e99e computed]"))
        #expect(lines[2] == "EXIT [flags 0x00, 0 bytes, CRC-32 ok]")

        var stranger = FrameTrace()
        #expect(
            stranger.consume(ByteBuffer(string: "LIST\r\n")) == [
                "not the magic (byte 0 is 0x4c): not Ferry, nothing more traced"
            ]
        )
        #expect(stranger.consume(ByteBuffer(bytes: Handshake.magic)).isEmpty)
    }

    @Test func aFrameTooLargeToFollowEndsTheTraceWithoutHoldingIt() {
        var header = ByteBuffer(bytes: Handshake.magic)
        header.writeInteger(UInt8(0x30))
        header.writeInteger(UInt8(0))
        header.writeInteger(UInt64(1) << 40)
        var trace = FrameTrace()
        #expect(trace.consume(header).last == "DATA length 1099511627776: too large to follow; nothing more traced")
    }
}
