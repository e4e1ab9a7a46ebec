import FerryProtocol
import NIOCore
import Testing

@Suite("CRC-32 through zlib")
struct CRC32Tests {
    @Test func knownCheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum(ByteBuffer(string: "123456789")) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test func incrementalEqualsWhole() {
        let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        var crc = CRC32()
        for start in stride(from: 0, to: bytes.count, by: 333) {
            crc.update(bytes[start..<min(start + 333, bytes.count)])
        }
        #expect(crc.value == CRC32.checksum(bytes))
    }

    @Test(arguments: [0, 1, 2, 1000, 65_537])
    func combineEqualsConcatenation(splitAt split: Int) {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let first = CRC32.checksum(bytes[..<split])
        let second = CRC32.checksum(bytes[split...])
        let combined = CRC32.combine(first, second, secondLength: UInt64(bytes.count - split))
        #expect(combined == CRC32.checksum(bytes))
    }

    @Test func continuingFromAnEarlierValue() {
        var crc = CRC32(continuingFrom: CRC32.checksum(Array("12345".utf8)))
        crc.update(Array("6789".utf8))
        #expect(crc.value == 0xCBF4_3926)
    }
}
