import FerryProtocol
import NIOCore

/// Turns fuzz bytes into a byte stream of mostly *valid* frames, so that mutations reach past the CRC checks into
/// the session logic, while raw records keep corruption in play.
///
/// Without this, a random input almost never carries a valid CRC and a harness would only ever test the checksum.
/// Ferry has no switch to disable CRC checks: the shipped code cannot be weakened, and the harnesses compute valid
/// CRCs instead.
///
/// The input is a sequence of records `kind u8, length u16, body`:
/// - `kind % 5 == 0`: raw bytes, sent as they are;
/// - `kind % 5 == 1`: a frame: `body[0]` is the type, the rest the payload, with a correct CRC;
/// - `kind % 5 == 2`: DATA: `body` repeated `kind / 5 + 1` times, with a correct CRC;
/// - `kind % 5 == 3`: END for every DATA since the last STOR/RETR/FILE_INFO record, correct unless `body[0]` is odd;
/// - `kind % 5 == 4`: the magic and a HELLO (versions and limits from `body`, or defaults).
public struct WireScript: Sendable {
    /// The bytes to deliver, in the order given.
    public private(set) var stream: [UInt8] = []
    /// Where to cut the stream into separate reads.
    public private(set) var cuts: [Int] = []
    /// Every STOR name (and RENAME target) and END (length, CRC) the stream carries in a valid frame: a server may
    /// only ever hold a file whose name and (length, CRC) are among these.
    public private(set) var storeNames: Set<String> = []
    public private(set) var declaredEnds: Set<EndOfData> = []

    public init(_ input: inout FuzzInput) {
        var transfer = OutgoingTransfer()
        while !input.isAtEnd {
            let kind = input.byte()
            let length = Int(input.integer(UInt16.self) % 8192)
            let body = input.bytes(length)
            switch kind % 5 {
            case 0:
                self.stream += body
            case 1:
                let type = FrameType(rawValue: body.first ?? 0)
                let frame = Frame(type: type, payload: ByteBuffer(bytes: body.dropFirst()))
                self.append(frame)
                if type == .store || type == .retrieve || type == .fileInfo {
                    transfer = OutgoingTransfer()
                }
                switch try? Message(decoding: frame) {
                case .store(let request)?:
                    self.storeNames.insert(request.name)
                case .rename(let request)?:
                    self.storeNames.insert(request.to)
                default:
                    break
                }
            case 2:
                var payload: [UInt8] = []
                for _ in 0...(Int(kind) / 5) {
                    payload += body
                }
                let chunk = DataChunk(ByteBuffer(bytes: payload))
                transfer.record(chunk)
                self.append(message: .data(chunk))
            case 3:
                var end = transfer.end
                if let first = body.first, first & 1 == 1 {
                    end.crc32 ^= UInt32(first)
                }
                self.declaredEnds.insert(end)
                self.append(message: .end(end))
            default:
                var hello = FuzzDefaults.hello
                if body.count >= 4 {
                    var fields = FuzzInput(body)
                    hello.minimumVersion = fields.integer()
                    hello.maximumVersion = fields.integer()
                    hello.maximumFramePayload = fields.integer()
                    hello.maximumFileSize = fields.integer()
                }
                self.stream += Handshake.magic
                self.append(message: .hello(hello))
            }
            self.cuts.append(self.stream.count)
        }
    }

    private mutating func append(_ frame: Frame) {
        var buffer = ByteBuffer()
        FrameSerializer.serialize(frame, into: &buffer)
        self.stream += buffer.readableBytesView
    }

    private mutating func append(message: Message) {
        var buffer = ByteBuffer()
        FrameSerializer.serialize(message, into: &buffer)
        self.stream += buffer.readableBytesView
    }

    /// The stream as the reads a peer would see, cut where the records ended (and within long records).
    public var reads: [ByteBuffer] {
        var reads: [ByteBuffer] = []
        var start = 0
        for cut in self.cuts where cut > start {
            var position = start
            while position < cut {
                let end = min(cut, position + 64 * 1024)
                reads.append(ByteBuffer(bytes: self.stream[position..<end]))
                position = end
            }
            start = cut
        }
        return reads
    }
}

public enum FuzzDefaults {
    /// The newest version, so sessions reach DELETE, RENAME, resumed downloads and resumable uploads.
    public static let hello = Hello(
        minimumVersion: 1,
        maximumVersion: 4,
        maximumFramePayload: 1 << 20,
        maximumFileSize: .max
    )
}
