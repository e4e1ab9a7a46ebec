import NIOCore
import Testing

@testable import FerryProtocol

/// A large DATA frame that straddles reads comes out in pieces where they landed, up to the parser's most pieces, not
/// copied together; any other way of arriving is copied whole as before, and every byte is checked either way.
@Suite("DATA frames across reads")
struct SplitDataFrameTests {
    static let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) }
    /// OK, a 300,000-byte DATA frame, EXIT: the DATA frame starts at `dataStart` and ends at `dataEnd`.
    static let stream = Array(
        SampleMessages.encoded([.ok, .data(DataChunk(ByteBuffer(bytes: payload))), .exit]).readableBytesView
    )
    static let dataStart = SampleMessages.encoded(.ok).count
    static let dataEnd = dataStart + FrameLayout.overhead + payload.count

    /// `bytes` in storage of exactly `capacity` bytes, as a socket read hands it over.
    static func read(_ bytes: ArraySlice<UInt8>, capacity: Int? = nil) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: capacity ?? bytes.count)
        buffer.writeBytes(bytes)
        return buffer
    }

    static func address(_ buffer: ByteBuffer) -> UnsafeRawPointer? {
        buffer.withUnsafeReadableBytes { UnsafeRawPointer($0.baseAddress) }
    }

    /// Feeds `reads` and returns the messages with the DATA chunk's pieces.
    static func decode(
        _ reads: [ByteBuffer],
        maximumPieces: Int = 2
    ) throws -> (messages: [Message], pieces: [ByteBuffer]) {
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: maximumPieces)
        var messages: [Message] = []
        for read in reads {
            parser.append(bytes: read)
            while let frame = try parser.nextFrame() {
                messages.append(try Message(decoding: frame))
            }
        }
        #expect(parser.bufferedByteCount == 0)
        var pieces: [ByteBuffer] = []
        for case .data(let chunk) in messages {
            chunk.forEachPiece { pieces.append($0) }
            #expect(chunk.length == chunk.bytes.readableBytes)
        }
        return (messages, pieces)
    }

    static let expected: [Message] = [.ok, .data(DataChunk(ByteBuffer(bytes: payload))), .exit]

    /// Cut in the header's last byte, anywhere in the payload, and at every byte of the trailer.
    @Test(arguments: [10, 11, 5_000, 150_000, 299_999, 300_009, 300_010, 300_011, 300_012, 300_013])
    func twoReadsGiveTwoPiecesWhereTheyLanded(cutIntoFrame: Int) throws {
        let cut = Self.dataStart + cutIntoFrame
        let first = Self.read(Self.stream[..<cut])
        let second = Self.read(Self.stream[cut...])
        let (messages, pieces) = try Self.decode([first, second])
        #expect(messages == Self.expected)
        let payloadInFirst = min(cutIntoFrame, FrameLayout.headerLength + Self.payload.count) - FrameLayout.headerLength
        if cutIntoFrame == FrameLayout.headerLength {
            // Only the header in the first read: the payload is all in the second, where it landed.
            #expect(pieces.count == 1)
            #expect(Self.address(pieces[0]) == Self.address(second))
        } else {
            let landed = try #require(Self.address(first)) + Self.dataStart + 10
            #expect(Self.address(pieces[0]) == landed, "held where it landed")
            #expect(pieces.first?.readableBytes == payloadInFirst)
            if payloadInFirst < Self.payload.count {
                #expect(pieces.count == 2)
                #expect(Self.address(pieces[1]) == Self.address(second))
            } else {
                #expect(pieces.count == 1, "the trailer alone was cut")
            }
        }
    }

    /// A flipped bit in either piece, or in the header, fails the frame's check, and the parser stays failed.
    @Test(arguments: [100, 200_000, 300_011])
    func aCorruptedByteInEitherPieceIsABadChecksum(cutIntoFrame: Int) {
        let cut = Self.dataStart + cutIntoFrame
        let corruptions = [Self.dataStart + 1, Self.dataStart + 50, cut - 1, cut, cut + 1, Self.dataEnd - 1]
        for corrupted in corruptions where corrupted >= Self.dataStart + 1 {
            var bytes = Self.stream
            bytes[corrupted] ^= 0x01
            var parser = FrameParser.permissive()
            var failure: FerryProtocolError?
            do {
                parser.append(bytes: Self.read(bytes[..<cut]))
                while try parser.nextFrame() != nil {}
                parser.append(bytes: Self.read(bytes[cut...]))
                while try parser.nextFrame() != nil {}
            } catch {
                failure = error
            }
            #expect(failure?.kind == .badChecksum, "byte \(corrupted - Self.dataStart) of the frame")
            #expect(parser.bufferedByteCount == 0, "nothing held after the failure")
            do {
                _ = try parser.nextFrame()
                Issue.record("the parser recovered after a bad frame")
            } catch {
                #expect(error.kind == .badChecksum)
            }
        }
    }

    /// With two pieces at most (a server's parser), up to the read that completes the frame it is copied together;
    /// that read's part is held where it landed.
    @Test func threeReadsCopyAllButTheLast() throws {
        let cuts = [Self.dataStart + 1_000, Self.dataStart + 200_000]
        let reads = [
            Self.read(Self.stream[..<cuts[0]]), Self.read(Self.stream[cuts[0]..<cuts[1]]),
            Self.read(Self.stream[cuts[1]...]),
        ]
        let (messages, pieces) = try Self.decode(reads)
        #expect(messages == Self.expected)
        #expect(pieces.count == 2)
        #expect(Self.address(pieces[1]) == Self.address(reads[2]))
        #expect(pieces[0].readableBytes == 200_000 - FrameLayout.headerLength)
    }

    /// Reads that arrive while a frame in two pieces waits to be taken are kept after it, in order.
    @Test func readsAfterAPendingFrameInTwoPiecesKeepTheirOrder() throws {
        let cut = Self.dataStart + 150_000
        var parser = FrameParser.permissive()
        parser.append(bytes: Self.read(Self.stream[..<cut]))
        #expect(try parser.nextFrame().map { try Message(decoding: $0) } == .ok)
        #expect(try parser.nextFrame() == nil)
        #expect(!parser.hasCompleteFrame)
        parser.append(bytes: Self.read(Self.stream[cut..<(Self.dataEnd + 3)]))
        parser.append(bytes: Self.read(Self.stream[(Self.dataEnd + 3)...]))
        #expect(parser.hasCompleteFrame)
        #expect(parser.isInsideFrame)
        #expect(parser.bufferedByteCount == Self.stream.count - Self.dataStart)
        var messages: [Message] = []
        while let frame = try parser.nextFrame() {
            messages.append(try Message(decoding: frame))
        }
        #expect(messages == Array(Self.expected.dropFirst()))
        #expect(parser.bufferedByteCount == 0)
    }

    /// A limit lowered after the frame's last piece arrived refuses the frame as too large, as it would a whole one.
    @Test func aLimitLoweredBeforeTheFrameIsTakenRefusesIt() throws {
        let cut = Self.dataStart + 150_000
        var parser = FrameParser.permissive()
        parser.append(bytes: Self.read(Self.stream[..<cut]))
        while try parser.nextFrame() != nil {}
        parser.append(bytes: Self.read(Self.stream[cut...]))
        parser.maximumPayloadLength = 1_000
        do {
            _ = try parser.nextFrame()
            Issue.record("a frame above the limit was returned")
        } catch {
            #expect(error.kind == .frameTooLarge)
        }
    }

    /// From 64 KiB of payload: a frame of 65,535 bytes is copied whole, one of 65,536 comes in two pieces.
    @Test(arguments: [(65_535, 1), (65_536, 2)])
    func theSmallestSplitPayload(length: Int, expectedPieces: Int) throws {
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0) }
        let bytes = SampleMessages.encoded(.data(DataChunk(ByteBuffer(bytes: payload))))
        let (messages, pieces) = try Self.decode([Self.read(bytes[..<30_000]), Self.read(bytes[30_000...])])
        #expect(messages == [.data(DataChunk(ByteBuffer(bytes: payload)))])
        #expect(pieces.count == expectedPieces)
        #expect(FrameParser.defaultSmallestSplitPayload == 65_536)
    }

    /// A frame completed by the start of a read far larger than the frame is copied together: its pieces would
    /// hold the whole read.
    @Test func aFrameCompletedByAMuchLargerReadIsCopiedTogether() throws {
        let cut = Self.dataStart + 150_000
        let first = Self.read(Self.stream[..<cut])
        let second = Self.read(Self.stream[cut...], capacity: 4 << 20)
        let (messages, pieces) = try Self.decode([first, second])
        #expect(messages == Self.expected)
        #expect(pieces.count == 1)
    }

    /// A frame that starts at the end of a read whose storage is more than twice the frame is copied out of it, so
    /// that a small frame never holds a large read's storage; the read that completes it is still held as it is.
    @Test func aFrameStartingInAMuchLargerReadIsCopiedOutOfIt() throws {
        let cut = Self.dataStart + 100
        let first = Self.read(Self.stream[..<cut], capacity: 4 << 20)
        let second = Self.read(Self.stream[cut...])
        let (messages, pieces) = try Self.decode([first, second])
        #expect(messages == Self.expected)
        #expect(pieces.count == 2)
        let landed = try #require(Self.address(first)) + Self.dataStart + 10
        #expect(Self.address(pieces[0]) != landed, "copied out of the large read")
        #expect(pieces[0].readableBytes == 90)
        #expect(Self.address(pieces[1]) == Self.address(second))
    }

    /// Small DATA frames are copied whole as before: two pieces would cost more than the copy.
    @Test func aSmallDataFrameIsCopiedWhole() throws {
        let payload = [UInt8](repeating: 9, count: 1_000)
        let bytes = SampleMessages.encoded(.data(DataChunk(ByteBuffer(bytes: payload))))
        var parser = FrameParser.permissive()
        parser.append(bytes: Self.read(bytes[..<500]))
        #expect(try parser.nextFrame() == nil)
        parser.append(bytes: Self.read(bytes[500...]))
        let frame = try #require(try parser.nextFrame())
        guard case .data(let chunk) = try Message(decoding: frame) else {
            Issue.record("expected DATA")
            return
        }
        var count = 0
        chunk.forEachPiece { _ in count += 1 }
        #expect(count == 1)
        #expect(Array(chunk.bytes.readableBytesView) == payload)
    }

    /// The reads of a frame cut at `cuts` (offsets into the frame), as a socket would hand them over.
    static func reads(cutInto cuts: [Int]) -> [ByteBuffer] {
        let bounds = [0] + cuts.map { Self.dataStart + $0 } + [Self.stream.count]
        return zip(bounds, bounds.dropFirst()).map { Self.read(Self.stream[$0..<$1]) }
    }

    /// Cut into three, four or five reads, in the header's last byte, the payload and the trailer: with four pieces
    /// allowed, a frame in up to four reads is held where it landed; in more, it is copied together from the fourth
    /// read on (which would not complete it), and so is the rest of it.
    @Test(arguments: [
        [10, 150_000],
        [100, 150_000, 299_999],
        [5_000, 100_000, 200_000],
        [100, 150_000, 300_011],
        [100, 300_010, 300_012],
        [1_000, 70_000, 140_000, 210_000],
        [1_000, 2_000, 3_000, 4_000, 5_000, 6_000],
    ])
    func readsUpToTheMostPiecesAreHeldWhereTheyLanded(cuts: [Int]) throws {
        let reads = Self.reads(cutInto: cuts)
        let (messages, pieces) = try Self.decode(reads, maximumPieces: 4)
        #expect(messages == Self.expected)
        #expect(pieces.count <= 4)
        // Where each read's part of the payload begins, in the frame and in the read.
        let payloadEnd = FrameLayout.headerLength + Self.payload.count
        let starts = [0] + cuts
        let held = zip(starts, reads).filter { start, read in
            let end = start + read.readableBytes - (start == 0 ? Self.dataStart : 0)
            return start < payloadEnd && end > FrameLayout.headerLength
        }
        guard cuts.count + 1 <= 4 else {
            #expect(pieces.count < held.count, "more reads than pieces: copied together")
            return
        }
        #expect(pieces.count == held.count)
        for (piece, (start, read)) in zip(pieces, held) {
            let offset =
                start == 0 ? Self.dataStart + FrameLayout.headerLength : max(FrameLayout.headerLength - start, 0)
            #expect(Self.address(piece) == Self.address(read).map { $0 + offset }, "piece from frame offset \(start)")
        }
    }

    /// While a frame's middle pieces are held, it is not complete, and every byte received is counted as buffered.
    @Test func aFrameWaitingForItsLastPieceIsNotComplete() throws {
        let reads = Self.reads(cutInto: [1_000, 100_000, 200_000])
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: 4)
        var appended = 0
        var messages: [Message] = []
        for (index, read) in reads.enumerated() {
            parser.append(bytes: read)
            appended += read.readableBytes
            if index == 1 || index == 2 {
                #expect(!parser.hasCompleteFrame)
                #expect(parser.isInsideFrame)
                #expect(parser.bufferedByteCount == appended - Self.dataStart)
            }
            while let frame = try parser.nextFrame() {
                messages.append(try Message(decoding: frame))
            }
        }
        #expect(messages == Self.expected)
        #expect(parser.bufferedByteCount == 0)
    }

    /// A flipped bit in a middle piece, or in the trailer split between the last two, fails the frame's check.
    @Test(arguments: [50_000, 150_000, 300_011, 300_013])
    func aCorruptedByteInAMiddlePieceIsABadChecksum(corruptedInFrame: Int) {
        var bytes = Self.stream
        bytes[Self.dataStart + corruptedInFrame] ^= 0x80
        let bounds = [0] + [1_000, 100_000, 200_000, 300_012].map { Self.dataStart + $0 } + [bytes.count]
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: 8)
        var failure: FerryProtocolError?
        do {
            for (start, end) in zip(bounds, bounds.dropFirst()) {
                parser.append(bytes: Self.read(bytes[start..<end]))
                while try parser.nextFrame() != nil {}
            }
        } catch {
            failure = error
        }
        #expect(failure?.kind == .badChecksum)
        #expect(parser.bufferedByteCount == 0, "nothing held after the failure")
    }

    /// A middle read in storage more than twice the frame is not held: what has arrived is copied together, and so
    /// is the rest of the frame but for its last read, held where it landed.
    @Test func aMiddleReadInMuchLargerStorageIsCopied() throws {
        var reads = Self.reads(cutInto: [1_000, 100_000, 200_000])
        reads[2] = Self.read(ArraySlice(reads[2].readableBytesView), capacity: 4 << 20)
        let (messages, pieces) = try Self.decode(reads, maximumPieces: 4)
        #expect(messages == Self.expected)
        #expect(pieces.count == 2)
        #expect(pieces.first?.readableBytes == 200_000 - FrameLayout.headerLength)
        #expect(Self.address(pieces[1]) == Self.address(reads[3]))
    }

    /// A frame trickling in small reads is copied together once its pieces run out, and the rest of it is copied after
    /// that but for its last read, not held in middle pieces again (which would copy everything once more each time
    /// they ran out).
    @Test(arguments: [1_000, 1_024, 3_000, 7_000])
    func aFrameInManySmallReadsIsCopiedTogetherOnce(readLength: Int) throws {
        let cuts = Array(stride(from: readLength - Self.dataStart, to: Self.payload.count, by: readLength))
        let reads = Self.reads(cutInto: cuts)
        let (messages, pieces) = try Self.decode(reads, maximumPieces: 4)
        #expect(messages == Self.expected)
        #expect(pieces.count == 2)
        #expect(Self.address(pieces.last ?? ByteBuffer()) == Self.address(reads[reads.count - 1]))
    }

    /// An empty read takes no piece's place: three reads in three pieces where they landed, with empty reads between.
    @Test func emptyReadsAreIgnored() throws {
        let reads = Self.reads(cutInto: [1_000, 100_000])
        let withEmpty = [reads[0], ByteBuffer(), reads[1], ByteBufferAllocator().buffer(capacity: 64), reads[2]]
        let (messages, pieces) = try Self.decode(withEmpty, maximumPieces: 3)
        #expect(messages == Self.expected)
        #expect(pieces.count == 3)
        #expect(Self.address(pieces[2]) == Self.address(reads[2]))
    }

    /// Where a frame held in pieces ends was fixed by its header when its first piece was taken: a limit lowered and
    /// raised again before the frame is taken changes nothing, and one left lowered refuses it.
    @Test(arguments: [true, false])
    func aLimitChangedWhilePiecesAreHeld(raisedAgain: Bool) throws {
        let reads = Self.reads(cutInto: [1_000, 100_000, 200_000])
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: 4)
        parser.append(bytes: reads[0])
        #expect(try parser.nextFrame().map { try Message(decoding: $0) } == .ok)
        #expect(try parser.nextFrame() == nil)
        parser.append(bytes: reads[1])
        parser.maximumPayloadLength = 50_000
        parser.append(bytes: reads[2])
        parser.append(bytes: reads[3])
        #expect(parser.hasCompleteFrame)
        if raisedAgain {
            parser.maximumPayloadLength = 1 << 20
            var messages: [Message] = []
            while let frame = try parser.nextFrame() {
                messages.append(try Message(decoding: frame))
            }
            #expect(messages == Array(Self.expected.dropFirst()))
            #expect(parser.bufferedByteCount == 0)
        } else {
            #expect(throws: FerryProtocolError.self) { try parser.nextFrame() }
            parser.append(bytes: Self.read(Self.stream[..<10]))
            #expect(parser.bufferedByteCount == 0, "nothing kept after the failure")
        }
    }

    /// However a large frame trickles in, putting it together copies a small multiple of its length: it is moved to
    /// storage of its own a few times as it grows (about 4/3 of its length in all), not at every read. A DATA frame
    /// (which may be held in pieces) and a frame of another type, in reads of 1 KiB, 1 KiB after the first 64 KiB, and
    /// one byte at a time for its first 4 KiB.
    @Test(arguments: [FrameType.data, FrameType.listEntries], [1_024, 0, 1])
    func aTricklingFrameIsCopiedAFewTimesAtMost(type: FrameType, trickle: Int) throws {
        let payload = ByteBuffer(bytes: (0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        var encoded = ByteBuffer()
        FrameSerializer.serialize(Frame(type: type, payload: payload), into: &encoded)
        let bytes = Array(encoded.readableBytesView)
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: type == .data ? 4 : 2)
        var position = 0
        var frames: [Frame] = []
        while position < bytes.count {
            let length =
                switch trickle {
                case 0: position < 65_536 ? 65_536 : 1_024
                case 1: position < 4_096 ? 1 : 60_000
                default: trickle
                }
            let end = min(bytes.count, position + length)
            parser.append(bytes: Self.read(bytes[position..<end]))
            position = end
            while let frame = try parser.nextFrame() {
                frames.append(frame)
            }
        }
        #expect(frames.map(\.payload) == [payload])
        #expect(frames.first?.type == type)
        #expect(parser.copiedByteCount <= 2 * bytes.count, "copied \(parser.copiedByteCount) bytes")
    }

    /// A frame that arrives whole, or over two reads as a DATA frame, is not copied at all.
    @Test func framesArrivingWholeOrInPiecesAreNotCopied() throws {
        var parser = FrameParser(maximumPayloadLength: 1 << 20, maximumPieces: 4)
        for read in Self.reads(cutInto: [1_000, 100_000, 200_000]) + [Self.read(Self.stream[...])] {
            parser.append(bytes: read)
            while try parser.nextFrame() != nil {}
        }
        #expect(parser.copiedByteCount == 0)
    }
}
