import CZlib
public import NIOCore

/// A running CRC-32 as zlib computes it (`crc32()`: reflected polynomial `0xEDB88320`, initial and final
/// XOR `0xFFFFFFFF`), so any peer can check Ferry's values with a stock zlib.
///
/// The checksum is a value that is fed incrementally, because Ferry never holds a whole file in memory:
/// the whole-file CRC is updated chunk by chunk as data frames pass.
public struct CRC32: Hashable, Sendable {
    /// The checksum of the bytes fed so far (`0` for none, as zlib defines it).
    public private(set) var value: UInt32

    public init() {
        self.value = 0
    }

    /// Continues a checksum computed elsewhere, e.g. a resumed transfer's earlier part.
    public init(continuingFrom value: UInt32) {
        self.value = value
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        self.value = CZlib_crc32(self.value, base, bytes.count)
    }

    /// Feeds the readable bytes of `buffer` without moving its reader index.
    public mutating func update(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { self.update($0) }
    }

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let handled: Void? = bytes.withContiguousStorageIfAvailable { self.update(UnsafeRawBufferPointer($0)) }
        if handled == nil {
            Array(bytes).withUnsafeBytes { self.update($0) }
        }
    }

    /// The checksum of one buffer's readable bytes.
    public static func checksum(_ buffer: ByteBuffer) -> UInt32 {
        var crc = CRC32()
        crc.update(buffer)
        return crc.value
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }

    /// The CRC-32 of `A ‖ B` from `crc(A)`, `crc(B)` and `B`'s length (zlib's `crc32_combine`), so a resumed
    /// transfer can be verified as a whole without reading its first part again.
    /// `0x` and 8 hex digits, as error messages show a CRC-32.
    public static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }

    public static func combine(_ first: UInt32, _ second: UInt32, secondLength: UInt64) -> UInt32 {
        guard secondLength > 0 else { return first }
        return CZlib_crc32_combine(first, second, Int64(clamping: secondLength))
    }
}
