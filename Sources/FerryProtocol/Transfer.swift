/// Verifies a file as it arrives: every DATA payload is counted and folded into a running CRC-32, and END is
/// accepted only if both match (SPEC.md §5.5). The same rules serve the server receiving STOR and the client
/// receiving RETR, so the two cannot verify differently.
public struct IncomingTransfer: Hashable, Sendable {
    /// The byte count announced before the data (STOR's size, or FILE_INFO's size − offset).
    public let expectedLength: UInt64
    public private(set) var receivedLength: UInt64 = 0
    private var checksum = CRC32()

    public init(expectedLength: UInt64) {
        self.expectedLength = expectedLength
    }

    public enum Failure: Error, Hashable, Sendable, CustomStringConvertible {
        /// More data arrived than was announced.
        case overflow(expected: UInt64)
        /// END's length, the announced length and the received length disagree.
        case lengthMismatch(expected: UInt64, received: UInt64, declared: UInt64)
        /// The received bytes' CRC-32 differs from END's.
        case checksumMismatch(declared: UInt32, actual: UInt32)

        public var errorCode: ErrorCode {
            switch self {
            case .overflow, .lengthMismatch: .lengthMismatch
            case .checksumMismatch: .checksumMismatch
            }
        }

        public var description: String {
            switch self {
            case .overflow(let expected):
                "more data than the \(expected) bytes announced"
            case .lengthMismatch(let expected, let received, let declared):
                "received \(received) bytes, announced \(expected), END declares \(declared)"
            case .checksumMismatch(let declared, let actual):
                "END declares CRC-32 \(hex32(declared)) but the data received gives \(hex32(actual))"
            }
        }
    }

    /// Counts and checksums one DATA payload; refuses it if it would exceed what was announced.
    public mutating func receive(_ chunk: DataChunk) throws(Failure) {
        let length = UInt64(chunk.length)
        guard length <= self.expectedLength - self.receivedLength else {
            throw .overflow(expected: self.expectedLength)
        }
        self.receivedLength += length
        self.checksum = CRC32(
            continuingFrom: CRC32.combine(self.checksum.value, chunk.crc32, secondLength: length)
        )
    }

    /// The CRC-32 of everything received so far.
    public var crc32: UInt32 {
        self.checksum.value
    }

    /// Checks END against what was received. Success means every byte announced arrived, in order, intact.
    public func verify(_ end: EndOfData) throws(Failure) {
        guard end.length == self.expectedLength, self.receivedLength == self.expectedLength else {
            throw .lengthMismatch(expected: self.expectedLength, received: self.receivedLength, declared: end.length)
        }
        guard end.crc32 == self.checksum.value else {
            throw .checksumMismatch(declared: end.crc32, actual: self.checksum.value)
        }
    }
}

/// The sending side's account of a transfer: what it has sent, so that END tells the truth.
public struct OutgoingTransfer: Hashable, Sendable {
    public private(set) var sentLength: UInt64 = 0
    private var checksum = CRC32()

    public init() {}

    public mutating func record(_ chunk: DataChunk) {
        self.record(length: chunk.length, crc32: chunk.crc32)
    }

    /// Records a payload sent without passing through memory, known by its length and CRC-32.
    public mutating func record(length: Int, crc32: UInt32) {
        let length = UInt64(length)
        self.checksum = CRC32(continuingFrom: CRC32.combine(self.checksum.value, crc32, secondLength: length))
        self.sentLength += length
    }

    public var end: EndOfData {
        EndOfData(length: self.sentLength, crc32: self.checksum.value)
    }
}
