public import NIOCore

/// Turns a byte stream into verified frames.
///
/// A plain value with no channel inside, so it is tested and fuzzed directly: ``append(bytes:)`` whatever
/// arrived, then call ``nextFrame()`` until it returns `nil` ("need more bytes"). Input may be split at any
/// byte and several frames may arrive in one read.
///
/// The declared payload length is checked against ``maximumPayloadLength`` as soon as the 10-byte header is
/// in, before a single payload byte is waited for, so a corrupted or hostile length cannot make the receiver
/// buffer more than one frame's worth. Consumed bytes are discarded, so the buffer never holds more than one
/// frame plus what arrived with it.
///
/// A large DATA frame that straddles reads is not copied together: its payload comes out in the pieces where it
/// landed (``DataChunk/forEachPiece(_:)``), up to ``maximumPieces`` of them, as long as no read's storage is larger
/// than twice the frame (so holding each costs at most twice what copying it would). With reads of one or two bulk
/// frames, most frames straddle: copying them was 8.8 % of `ferry get`'s CPU samples; held in up to two pieces, 6.8 %
/// was left, for the 30 % of frames that spanned three reads or more; in up to four (a client's), 0.5 %.
///
/// After it has thrown, the parser stays failed: the stream has lost its framing and the connection must close.
public struct FrameParser: Sendable {
    /// The largest payload accepted; longer declarations fail with ``FerryProtocolError/Kind/frameTooLarge``.
    /// A connection starts at the handshake limit and raises this once it has announced its own.
    public var maximumPayloadLength: Int {
        didSet { self.maximumPayloadLength = Self.clamp(self.maximumPayloadLength) }
    }

    /// The frame being parsed, or the frames of one read.
    private var buffer: ByteBuffer
    /// The rest of the DATA frame at the start of ``buffer`` so far, held in the later reads where it landed instead
    /// of being copied after it: once ``buffer`` and these pieces come to ``splitFrameLength``, they are exactly one
    /// whole frame (``holdsWholeSplitFrame``).
    private var continuation: [ByteBuffer] = []
    private var continuationLength = 0
    /// The whole length of the frame held in pieces, fixed when its first piece was taken (so that a limit changed
    /// meanwhile cannot change where it ends; ``nextFrame()`` checks the limit when it takes the frame).
    private var splitFrameLength = 0
    /// Whether part of the frame at the start of ``buffer`` has been copied after its start: the rest of that frame
    /// is then copied too, into the same storage, but for the piece that completes it, and never held in middle
    /// pieces again (which would copy it all once more when they ran out).
    private var assemblingFrame = false
    /// Whether ``buffer`` is storage ``makeRoomForFrame()`` made for the frame in progress (not a read's), so that it
    /// is moved again only when it runs short.
    private var ownsBuffer = false
    /// Bytes copied to put frames together, for tests: a frame should cost a small multiple of its length at most,
    /// however it arrives.
    private(set) var copiedByteCount = 0
    /// What arrived after the end of the frame in ``buffer``, kept as it arrived: parsed once that frame is done.
    private var following = ByteBuffer()
    private var failure: FerryProtocolError?

    /// The smallest DATA payload received in pieces rather than copied whole.
    private let smallestSplitPayload: Int
    /// The most pieces a DATA payload is held in; beyond them, what has arrived of the frame is copied together.
    public let maximumPieces: Int

    /// - Parameters:
    ///   - smallestSplitPayload: below ``defaultSmallestSplitPayload`` only to let tests and fuzzing reach frames
    ///     in pieces with small inputs.
    ///   - maximumPieces: how many reads one frame may hold where they landed: 1 copies every straddling frame
    ///     together. A frame in `n` pieces keeps up to `n` reads' storage, each at most twice the frame: a server,
    ///     whose ``FrameBudget`` counts declared lengths, keeps the default of two; a client, with one connection
    ///     and reads of up to two bulk frames, may hold more.
    public init(
        maximumPayloadLength: Int,
        smallestSplitPayload: Int = Self.defaultSmallestSplitPayload,
        maximumPieces: Int = 2
    ) {
        self.maximumPayloadLength = Self.clamp(maximumPayloadLength)
        self.smallestSplitPayload = max(smallestSplitPayload, 1)
        self.maximumPieces = max(maximumPieces, 1)
        self.buffer = ByteBuffer()
    }

    /// Below it, copying a straddling DATA payload costs less than keeping another read's storage for it.
    public static let defaultSmallestSplitPayload = 64 * 1024

    /// A `ByteBuffer` holds at most 4 GiB, and keeping the limit far below `Int.max` keeps every offset sum
    /// in ``parseFrame()`` free of overflow.
    private static func clamp(_ limit: Int) -> Int {
        min(max(limit, 0), Int(UInt32.max) - FrameLayout.overhead)
    }

    /// Bytes received but not yet returned as frames.
    public var bufferedByteCount: Int {
        self.buffer.readableBytes + self.continuationLength + self.following.readableBytes
    }

    /// The payload length the frame in progress declares, once its header is in (and within the limit).
    public var declaredPayloadLength: Int? {
        guard let declared = self.buffer.getInteger(at: self.buffer.readerIndex + 2, as: UInt64.self),
            declared <= UInt64(self.maximumPayloadLength)
        else { return nil }
        return Int(declared)
    }

    /// Whether a frame has been started but not completed, which is what an idle timer needs to know.
    public var isInsideFrame: Bool {
        self.bufferedByteCount > 0
    }

    /// Whether ``nextFrame()`` can answer without more bytes: a whole frame is buffered, or a header that fails.
    public var hasCompleteFrame: Bool {
        if !self.continuation.isEmpty {
            // Or the limit was lowered under the frame since its first piece was taken: nextFrame() refuses it.
            return self.holdsWholeSplitFrame || self.declaredPayloadLength == nil
        }
        guard let declared = self.buffer.getInteger(at: self.buffer.readerIndex + 2, as: UInt64.self) else {
            return false
        }
        guard declared <= UInt64(self.maximumPayloadLength) else { return true }
        return self.buffer.readableBytes >= FrameLayout.overhead + Int(declared)
    }

    public mutating func append(bytes: ByteBuffer) {
        // After a failure nothing more is parsed; an empty read would only take a piece's place.
        guard self.failure == nil, bytes.readableBytes > 0 else { return }
        var bytes = bytes
        if self.holdsWholeSplitFrame || self.following.readableBytes > 0 {
            self.copiedByteCount += bytes.readableBytes
            self.following.writeBuffer(&bytes)
        } else if self.buffer.readableBytes == 0 {
            // Take the read as it is: no copy for the common case of a frame arriving whole.
            self.buffer = bytes
            self.assemblingFrame = false
            self.ownsBuffer = false
        } else if let missing = self.missingByteCount, missing > 0 {
            // Only what belongs to the frame in progress is its; the frames after it are parsed where they landed.
            let completes = missing <= bytes.readableBytes
            var piece = bytes.readSlice(length: min(missing, bytes.readableBytes)) ?? ByteBuffer()
            if self.mayHold(piece, completing: completes) {
                if self.continuation.isEmpty {
                    self.splitFrameLength = self.expectedFrameLength
                }
                self.continuation.append(piece)
                self.continuationLength += piece.readableBytes
            } else {
                // Copied after the frame's start, so that the frame's storage holds that frame alone (its start and
                // pieces copied out first if they were held where they landed), and so is the rest of the frame.
                // (Pieces held are copied out even if the frame is no longer splittable: the limit lowered since.)
                if !self.continuation.isEmpty || self.isSplittable {
                    self.makeRoomForFrame()
                }
                self.assemblingFrame = true
                self.copiedByteCount += piece.readableBytes
                self.buffer.writeBuffer(&piece)
            }
            if bytes.readableBytes > 0 {
                self.following = bytes
            }
        } else {
            // The header is not all in yet, or the frame is whole and not yet taken (or over the limit): the read goes
            // after it (a frame start that ``nextFrame()`` left in place in a read's storage copied out first).
            if self.isSplittable {
                self.makeRoomForFrame()
            }
            self.copiedByteCount += bytes.readableBytes
            self.buffer.writeBuffer(&bytes)
        }
    }

    /// Whether the frame at the start of ``buffer`` may be continued in pieces of its own (``continuation``): a DATA
    /// frame of at least ``smallestSplitPayload`` bytes whose start lies in storage no larger than twice the frame,
    /// so that holding the read it started in, rather than copying its start out, at most doubles what the frame
    /// costs. (``mayHold(_:completing:)`` holds the later reads on the same condition.)
    private var isSplittable: Bool {
        guard self.buffer.getInteger(at: self.buffer.readerIndex, as: UInt8.self) == FrameType.data.rawValue,
            let declared = self.declaredPayloadLength, declared >= self.smallestSplitPayload
        else { return false }
        return self.buffer.storageCapacity <= 2 * (FrameLayout.overhead + declared)
    }

    /// Whether `piece`, the next part of the splittable frame at the start of ``buffer``, is held where it landed:
    /// its storage is no larger than twice the frame, and the frame stays within ``maximumPieces`` (one kept free for
    /// the piece that completes it, the only one taken once the frame is being copied together).
    private func mayHold(_ piece: ByteBuffer, completing: Bool) -> Bool {
        guard self.isSplittable, piece.storageCapacity <= 2 * self.expectedFrameLength else { return false }
        let pieces = 1 + self.continuation.count + 1
        // A frame being copied together takes no more middle pieces; its last may still be held.
        return completing ? pieces <= self.maximumPieces : !self.assemblingFrame && pieces < self.maximumPieces
    }

    /// How many bytes the frame at the start of the buffer still lacks, once its header is in (and within the limit,
    /// unless pieces of it are held already); zero or less when the buffer has all of it, and perhaps more.
    private var missingByteCount: Int? {
        if !self.continuation.isEmpty {
            return self.splitFrameLength - self.buffer.readableBytes - self.continuationLength
        }
        guard let declared = self.buffer.getInteger(at: self.buffer.readerIndex + 2, as: UInt64.self),
            declared <= UInt64(self.maximumPayloadLength)
        else { return nil }
        return FrameLayout.overhead + Int(declared) - self.buffer.readableBytes
    }

    /// Whether ``continuation`` holds all the rest of the frame at the start of ``buffer``.
    private var holdsWholeSplitFrame: Bool {
        !self.continuation.isEmpty
            && self.buffer.readableBytes + self.continuationLength == self.splitFrameLength
    }

    /// The next complete frame, or `nil` when more bytes are needed. Frames of unknown optional types are
    /// verified and skipped here, so callers never see them.
    public mutating func nextFrame() throws(FerryProtocolError) -> Frame? {
        if let failure = self.failure {
            throw failure
        }
        do throws(FerryProtocolError) {
            while true {
                guard let frame = try self.parseFrame() else {
                    if !self.isSplittable {
                        self.makeRoomForFrame()
                    }
                    return nil
                }
                if frame.type.isKnown {
                    return frame
                }
                if !frame.type.isOptional {
                    throw FerryProtocolError.unknownFrameType(frame.type)
                }
            }
        } catch {
            self.failure = error
            // Nothing more will be parsed: what was held goes now, not when the connection is done draining.
            self.buffer = ByteBuffer()
            self.continuation = []
            self.continuationLength = 0
            self.assemblingFrame = false
            self.ownsBuffer = false
            self.following = ByteBuffer()
            throw error
        }
    }

    private mutating func parseFrame() throws(FerryProtocolError) -> Frame? {
        if self.holdsWholeSplitFrame {
            return try self.parseSplitFrame()
        }
        let start = self.buffer.readerIndex
        guard let (rawType, flags, declaredLength) = try self.header() else {
            return nil
        }
        // Safe: the length is at most `maximumPayloadLength`, an `Int`.
        let payloadLength = Int(declaredLength)
        let coveredLength = FrameLayout.headerLength + payloadLength
        guard let carried = self.buffer.getInteger(at: start + coveredLength, as: UInt32.self) else {
            return nil
        }
        // One pass over the payload serves twice: the frame check combines the header's CRC with the
        // payload's, and the payload's alone travels on in the frame for whole-file checksums.
        let (headerCRC, payloadCRC) = self.buffer.withUnsafeReadableBytes { bytes in
            var header = CRC32()
            header.update(UnsafeRawBufferPointer(rebasing: bytes.prefix(FrameLayout.headerLength)))
            var payload = CRC32()
            payload.update(UnsafeRawBufferPointer(rebasing: bytes[FrameLayout.headerLength..<coveredLength]))
            return (header.value, payload.value)
        }
        let computed = CRC32.combine(headerCRC, payloadCRC, secondLength: UInt64(payloadLength))
        guard computed == carried else {
            throw FerryProtocolError.badChecksum(type: rawType, expected: carried, actual: computed)
        }
        self.buffer.moveReaderIndex(forwardBy: FrameLayout.headerLength)
        // Cannot fail: the CRC read above proved these bytes are present.
        let payload = self.buffer.readSlice(length: payloadLength) ?? ByteBuffer()
        self.buffer.moveReaderIndex(forwardBy: FrameLayout.trailerLength)
        self.assemblingFrame = false
        self.reclaimConsumedBytes()
        return Frame(type: FrameType(rawValue: rawType), flags: flags, payload: payload, payloadCRC32: payloadCRC)
    }

    /// The header of the frame at the start of ``buffer``, or `nil` if it is not all in yet.
    ///
    /// - Throws: ``FerryProtocolError/Kind/frameTooLarge`` for a payload length above ``maximumPayloadLength``.
    private func header() throws(FerryProtocolError) -> (type: UInt8, flags: UInt8, payloadLength: UInt64)? {
        let start = self.buffer.readerIndex
        guard
            let rawType = self.buffer.getInteger(at: start, as: UInt8.self),
            let flags = self.buffer.getInteger(at: start + 1, as: UInt8.self),
            let declaredLength = self.buffer.getInteger(at: start + 2, as: UInt64.self)
        else {
            return nil
        }
        guard declaredLength <= UInt64(self.maximumPayloadLength) else {
            throw FerryProtocolError.frameTooLarge(declared: declaredLength, limit: self.maximumPayloadLength)
        }
        return (rawType, flags, declaredLength)
    }

    /// The frame made of ``buffer`` and the pieces in ``continuation`` (the last one cut to end exactly where the
    /// frame does), checked as one: its payload is returned in those pieces, its trailer read across them if it
    /// straddles.
    private mutating func parseSplitFrame() throws(FerryProtocolError) -> Frame? {
        // Checked against the limit again, in case it was lowered since the pieces were taken.
        guard let (rawType, flags, declaredLength) = try self.header() else {
            // Cannot happen: pieces are only taken for a frame whose header was in.
            throw FerryProtocolError(.malformedPayload, "a frame in pieces lost its header")
        }
        let payloadLength = Int(declaredLength)
        let coveredLength = FrameLayout.headerLength + payloadLength
        guard self.buffer.readableBytes + self.continuationLength == coveredLength + FrameLayout.trailerLength,
            let header = self.buffer.getSlice(at: self.buffer.readerIndex, length: FrameLayout.headerLength)
        else {
            throw FerryProtocolError(.malformedPayload, "a frame in pieces does not add up")
        }
        var payload: [ByteBuffer] = []
        payload.reserveCapacity(1 + self.continuation.count)
        var payloadCRC = CRC32()
        // The trailer's four bytes, wherever each lies: after the payload in the last piece, or partly before.
        var carried: UInt32 = 0
        // Where the piece being taken starts in the frame.
        var offset = 0
        func take(_ piece: ByteBuffer) throws(FerryProtocolError) {
            let end = offset + piece.readableBytes
            let payloadStart = max(offset, FrameLayout.headerLength)
            let payloadEnd = min(end, coveredLength)
            if payloadStart < payloadEnd {
                guard
                    let slice = piece.getSlice(
                        at: piece.readerIndex + payloadStart - offset,
                        length: payloadEnd - payloadStart
                    )
                else {
                    throw FerryProtocolError(.malformedPayload, "a frame in pieces does not add up")
                }
                payloadCRC.update(slice)
                payload.append(slice)
            }
            let trailerStart = max(offset, coveredLength)
            for index in trailerStart..<max(end, trailerStart) {
                let byte = piece.getInteger(at: piece.readerIndex + index - offset, as: UInt8.self)
                carried = carried << 8 | UInt32(byte ?? 0)
            }
            offset = end
        }
        try take(self.buffer)
        for piece in self.continuation {
            try take(piece)
        }
        let computed = CRC32.combine(
            CRC32.checksum(header),
            payloadCRC.value,
            secondLength: UInt64(payloadLength)
        )
        guard computed == carried else {
            throw FerryProtocolError.badChecksum(type: rawType, expected: carried, actual: computed)
        }
        self.buffer = self.following
        self.ownsBuffer = false
        self.following = ByteBuffer()
        self.continuation.removeAll(keepingCapacity: true)
        self.continuationLength = 0
        self.assemblingFrame = false
        return Frame(
            type: FrameType(rawValue: rawType),
            flags: flags,
            pieces: payload,
            payloadCRC32: payloadCRC.value
        )
    }

    private mutating func reclaimConsumedBytes() {
        if self.buffer.readableBytes == 0 {
            // Drop the storage entirely: the returned payloads keep it alive only as long as they need to.
            self.buffer = self.following
            self.ownsBuffer = false
            self.following = ByteBuffer()
        }
    }

    /// Called when only part of a frame is buffered and more is to be copied after it: moves that part (its start and
    /// the pieces held after it) to storage of its own, with room for four times what has arrived, at most the whole
    /// frame. The reads that follow are copied after it, and it is moved again only once it is more than half full
    /// and short of the frame, so a large frame trickling in small reads is moved a few times, not once per read (a
    /// 1 MB frame in 1 KiB reads: 1.26 MB copied in all, 7.5–9.8 MB when it was moved at every read while its storage
    /// was short of the frame); the storage shared with payloads already returned is released, and the buffer never
    /// holds more than one frame.
    private mutating func makeRoomForFrame() {
        if self.ownsBuffer, self.continuation.isEmpty, self.buffer.readerIndex == 0 {
            // Its own storage already: moved again only once it is more than half full and still short of the frame,
            // so a frame trickling in is moved a few times in all, not at every read.
            guard self.buffer.capacity < self.expectedFrameLength, 2 * self.buffer.readableBytes > self.buffer.capacity
            else { return }
        } else {
            guard
                !self.continuation.isEmpty || self.buffer.readerIndex > 0
                    || self.buffer.capacity < self.expectedFrameLength
            else { return }
        }
        var partial = self.buffer
        let arrived = partial.readableBytes + self.continuationLength
        // Reserve for the whole frame up to the size of a normal DATA frame, or up to four times what has arrived
        // of it: a peer that announces a large frame and then trickles cannot make every connection hold the
        // maximum in advance, while a large frame that is really coming is copied once, not regrown.
        let reserve = min(
            self.expectedFrameLength,
            max(ProtocolLimits.defaultDataChunkLength + FrameLayout.overhead, 4 * arrived)
        )
        var fresh = ByteBufferAllocator().buffer(capacity: max(arrived, reserve))
        fresh.writeBuffer(&partial)
        for var piece in self.continuation {
            fresh.writeBuffer(&piece)
        }
        self.copiedByteCount += arrived
        self.continuation.removeAll(keepingCapacity: true)
        self.continuationLength = 0
        self.buffer = fresh
        self.ownsBuffer = true
    }

    /// The whole size of the frame being received, once its header is in (and within the limit); otherwise what
    /// is buffered.
    private var expectedFrameLength: Int {
        guard let declared = self.buffer.getInteger(at: self.buffer.readerIndex + 2, as: UInt64.self),
            declared <= UInt64(self.maximumPayloadLength)
        else {
            return self.buffer.readableBytes
        }
        return FrameLayout.overhead + Int(declared)
    }
}
