import FerryProtocol
import NIOCore
import Testing

@Suite("Frame codec")
struct FrameCodecTests {
    // MARK: - Round trips

    @Test(arguments: SampleMessages.all)
    func everyMessageRoundTrips(_ message: Message) throws {
        let bytes = SampleMessages.encoded(message)
        let decoded = try FrameParser.decodeAll(bytes, pieces: [bytes.count])
        #expect(decoded == [message])
        #expect(SampleMessages.encoded(decoded[0]) == bytes, "re-encoding gives the same bytes")
    }

    @Test func byteByByteDecodesTheWholeStream() throws {
        let stream = SampleMessages.encoded(SampleMessages.all)
        let bytes = Array(stream.readableBytesView)
        #expect(try FrameParser.decodeAll(bytes, pieces: [1]) == SampleMessages.all)
    }

    /// Random sequences at random splits, each fed twice: frames asked for after every read, and several reads
    /// appended back to back before any frame is asked for (reads that complete one frame and start the next: the
    /// parser keeps what follows a frame apart from it). The same frames either way.
    @Test(arguments: [1, 2, 3, 7, 1000])
    func randomSequencesAtRandomSplits(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        for _ in 0..<20 {
            let messages = (0..<Int.random(in: 1...40, using: &random)).map { _ in
                SampleMessages.all.randomElement(using: &random)!
            }
            let bytes = Array(SampleMessages.encoded(messages).readableBytesView)
            let pieces = (0..<16).map { _ in Int.random(in: 1...(bytes.count / 3 + 2), using: &random) }
            #expect(try FrameParser.decodeAll(bytes, pieces: pieces) == messages)
            let appends = Int.random(in: 1...4, using: &random)
            #expect(try FrameParser.decodeAll(bytes, pieces: pieces, appendsPerParse: appends) == messages)
        }
    }

    @Test func severalFramesInOneRead() throws {
        let messages: [Message] = [.list, .exit, .ok, .abort]
        var parser = FrameParser.permissive()
        parser.append(bytes: SampleMessages.encoded(messages))
        var decoded: [Message] = []
        while let frame = try parser.nextFrame() {
            decoded.append(try Message(decoding: frame))
        }
        #expect(decoded == messages)
    }

    @Test func dataWithSentinelsAndEveryByteValueSurvives() throws {
        // The seed protocol ended files with "##"; here it is just data, at every position in a chunk.
        for position in [0, 1, 2, 100, 65_534, 65_535] {
            var bytes = (0..<65_536).map { UInt8(truncatingIfNeeded: $0) }
            bytes[position] = UInt8(ascii: "#")
            if position + 1 < bytes.count { bytes[position + 1] = UInt8(ascii: "#") }
            let message = Message.data(DataChunk(ByteBuffer(bytes: bytes)))
            let decoded = try FrameParser.decodeAll(SampleMessages.encoded(message), pieces: [4093])
            guard case .data(let chunk) = decoded.first else {
                Issue.record("expected DATA, got \(decoded)")
                return
            }
            #expect(Array(chunk.bytes.readableBytesView) == bytes)
            #expect(chunk.crc32 == CRC32.checksum(bytes))
        }
    }

    @Test func zeroCopyEnvelopeMatchesTheCopyingSerializer() {
        let chunk = DataChunk(ByteBuffer(bytes: (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 3) }))
        let (header, trailer) = FrameSerializer.dataFrameEnvelope(for: chunk, allocator: ByteBufferAllocator())
        var joined = header
        joined.writeImmutableBuffer(chunk.bytes)
        joined.writeImmutableBuffer(trailer)
        #expect(Array(joined.readableBytesView) == SampleMessages.encoded(.data(chunk)))
    }

    // MARK: - Corruption

    @Test func everyFlippedBitIsDetected() throws {
        let message = Message.store(StoreRequest(name: "file.bin", size: 1234, options: .overwrite))
        let bytes = SampleMessages.encoded(message)
        for index in bytes.indices {
            for bit in 0..<8 {
                var corrupted = bytes
                corrupted[index] ^= UInt8(1) << bit
                var parser = FrameParser(maximumPayloadLength: 1 << 16)
                parser.append(bytes: ByteBuffer(bytes: corrupted))
                // Either the CRC catches it, or a corrupted length is too large or still waiting for bytes
                // (which the idle timeout ends); never a frame.
                do {
                    let frame = try parser.nextFrame()
                    #expect(frame == nil, "byte \(index) bit \(bit) produced a frame")
                } catch {
                    #expect([.badChecksum, .frameTooLarge].contains(error.kind), "byte \(index) bit \(bit): \(error)")
                }
            }
        }
    }

    @Test func corruptedDataPayloadIsABadChecksum() {
        var bytes = SampleMessages.encoded(.data(DataChunk(ByteBuffer(repeating: 0x23, count: 100_000))))
        bytes[50_000] ^= 0x10
        var parser = FrameParser.permissive()
        parser.append(bytes: ByteBuffer(bytes: bytes))
        #expect(throws: FerryProtocolError.self) { try parser.nextFrame() }
        do {
            _ = try parser.nextFrame()
        } catch {
            #expect(error.kind == .badChecksum, "the parser stays failed with the same error")
        }
    }

    @Test func oversizedLengthIsRejectedAfterOnlyTheHeader() {
        var header = ByteBuffer()
        header.writeInteger(FrameType.data.rawValue)
        header.writeInteger(UInt8(0))
        header.writeInteger(UInt64(1 << 16) + 1)
        var parser = FrameParser(maximumPayloadLength: 1 << 16)
        parser.append(bytes: header)
        do {
            _ = try parser.nextFrame()
            Issue.record("an oversized length was accepted")
        } catch {
            #expect(error.kind == .frameTooLarge)
            #expect(error.errorCode == .frameTooLarge)
        }
        var huge = ByteBuffer()
        huge.writeInteger(FrameType.data.rawValue)
        huge.writeInteger(UInt8(0))
        huge.writeInteger(UInt64.max)
        var other = FrameParser(maximumPayloadLength: .max)
        other.append(bytes: huge)
        #expect(throws: FerryProtocolError.self) { try other.nextFrame() }
    }

    @Test func truncatedInputNeedsMoreAndNeverYieldsAPartialFrame() throws {
        let bytes = SampleMessages.encoded(.store(StoreRequest(name: "partial", size: 9)))
        for length in 0..<bytes.count {
            var parser = FrameParser.permissive()
            parser.append(bytes: ByteBuffer(bytes: bytes.prefix(length)))
            #expect(try parser.nextFrame() == nil)
            #expect(parser.bufferedByteCount == length)
            #expect(parser.isInsideFrame == (length > 0))
        }
    }

    @Test func unknownCriticalTypeFailsAndUnknownOptionalTypeIsSkipped() throws {
        var stream = ByteBuffer()
        FrameSerializer.serialize(
            Frame(type: FrameType(rawValue: 0xC7), payload: ByteBuffer(string: "hint")),
            into: &stream
        )
        FrameSerializer.serialize(.list, into: &stream)
        var parser = FrameParser.permissive()
        parser.append(bytes: stream)
        #expect(try parser.nextFrame().map { try Message(decoding: $0) } == .list)

        var critical = ByteBuffer()
        FrameSerializer.serialize(Frame(type: FrameType(rawValue: 0x7F), payload: ByteBuffer()), into: &critical)
        var failing = FrameParser.permissive()
        failing.append(bytes: critical)
        do {
            _ = try failing.nextFrame()
            Issue.record("an unknown critical frame was accepted")
        } catch {
            #expect(error.kind == .unknownFrameType)
        }
    }

    @Test func flagsAreCarriedAndIgnored() throws {
        var stream = ByteBuffer()
        FrameSerializer.serialize(Frame(type: .list, flags: 0xFF, payload: ByteBuffer()), into: &stream)
        var parser = FrameParser.permissive()
        parser.append(bytes: stream)
        let frame = try #require(try parser.nextFrame())
        #expect(frame.flags == 0xFF)
        #expect(try Message(decoding: frame) == .list)
    }

    @Test func memoryStaysBoundedOverALongStream() throws {
        var parser = FrameParser.permissive()
        let frame = SampleMessages.encoded(.data(DataChunk(ByteBuffer(repeating: 1, count: 10_000))))
        // Deliver frames straddling reads so the parser always holds a partial frame.
        for _ in 0..<2_000 {
            parser.append(bytes: ByteBuffer(bytes: frame[..<5_000]))
            _ = try parser.nextFrame()
            parser.append(bytes: ByteBuffer(bytes: frame[5_000...]))
            #expect(try parser.nextFrame() != nil)
            #expect(parser.bufferedByteCount == 0)
        }
    }
}

/// A small seeded generator, so random tests replay exactly.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
