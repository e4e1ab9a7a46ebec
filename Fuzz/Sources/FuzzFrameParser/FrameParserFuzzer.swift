// Harness 1: the frame parser, fed arbitrary bytes at arbitrary splits.
//
// Invariants: it never traps; it never holds more than one frame plus the reads not yet parsed; every frame it
// returns re-serializes to exactly the bytes it came from (so nothing is invented or lost), DATA frames that came in
// pieces included.
import FerryProtocol
import FuzzSupport
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameParser(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    // The first bytes choose the frame limit and the read sizes; the rest is the stream.
    let limit = Int(input.integer(UInt16.self)) * 16
    let splitSeed = Int(input.byte()) + 1
    let stream = input.rest()

    // DATA payloads from 8 bytes up (8 × the split seed) come out in the pieces they landed in, up to one to five
    // pieces by the seed, so small inputs reach that path too. With every third seed, reads arrive in pairs before
    // frames are asked for: a read may then land while a frame in pieces waits to be taken. With every fourth, each
    // read is appended under half the limit, restored before frames are asked for.
    let maximumPieces = 1 + splitSeed % 5
    var parser = FrameParser(
        maximumPayloadLength: limit,
        smallestSplitPayload: splitSeed * 8,
        maximumPieces: maximumPieces
    )
    let readsInPairs = splitSeed % 3 == 0
    let limitLoweredWhileAppending = splitSeed % 4 == 0
    var position = 0
    var read = 0
    outer: while position < stream.count {
        read += 1
        let length = min(stream.count - position, (read * splitSeed) % 97 + 1)
        if limitLoweredWhileAppending {
            parser.maximumPayloadLength = limit / 2
        }
        parser.append(bytes: ByteBuffer(bytes: stream[position..<(position + length)]))
        parser.maximumPayloadLength = limit
        position += length
        if readsInPairs, read % 2 == 1, position < stream.count {
            continue
        }
        while true {
            // A frame, or a failure, comes only when a whole frame (or a failing header) was announced.
            let announced = parser.hasCompleteFrame
            let frame: Frame?
            do {
                frame = try parser.nextFrame()
            } catch {
                precondition(announced, "nextFrame failed where hasCompleteFrame said more bytes were needed")
                break outer
            }
            guard let frame else { break }
            precondition(announced, "nextFrame returned a frame hasCompleteFrame did not announce")
            precondition(frame.payload.readableBytes <= limit, "a frame above the limit was returned")
            // The frame just returned ends where the unparsed bytes begin (optional frames the parser skipped may
            // lie before it), and must re-serialize to exactly those bytes.
            var reencoded = ByteBuffer()
            FrameSerializer.serialize(frame, into: &reencoded)
            let end = position - parser.bufferedByteCount
            precondition(
                Array(stream[(end - reencoded.readableBytes)..<end]) == Array(reencoded.readableBytesView),
                "a frame differs from the bytes it was parsed from"
            )
            if case .data(let chunk)? = try? Message(decoding: frame) {
                var pieces = 0
                chunk.forEachPiece { _ in pieces += 1 }
                precondition(pieces <= maximumPieces, "a DATA frame in more pieces than allowed")
            }
        }
        precondition(
            parser.bufferedByteCount <= max(limit, 0) + FrameLayout.overhead + 2 * 97,
            "the parser holds more than one frame"
        )
    }
    return 0
}
