import NIOCore

/// The field encodings SPEC.md §3 defines: big-endian integers and `u16`-length-prefixed UTF-8 strings.
extension ByteBuffer {
    /// Writes a string field, cut at a character boundary to `maximumLength` bytes (at most 65,535).
    @discardableResult
    mutating func writeFerryString(_ string: String, maximumLength: Int = Int(UInt16.max)) -> Int {
        var utf8 = Substring(string).utf8
        let limit = Swift.min(maximumLength, Int(UInt16.max))
        if utf8.count > limit {
            // Never split a multi-byte character: back up to the start of one.
            var end = utf8.index(utf8.startIndex, offsetBy: limit)
            while end > utf8.startIndex, UTF8.isContinuation(utf8[end]) {
                end = utf8.index(before: end)
            }
            utf8 = utf8[..<end]
        }
        let written = self.writeInteger(UInt16(utf8.count))
        return written + self.writeBytes(utf8)
    }

    /// Reads a string field's raw bytes; `nil` when the buffer ends inside it.
    mutating func readFerryStringBytes() -> [UInt8]? {
        guard let length = self.getInteger(at: self.readerIndex, as: UInt16.self),
            let bytes = self.getBytes(at: self.readerIndex + 2, length: Int(length))
        else {
            return nil
        }
        self.moveReaderIndex(forwardBy: 2 + Int(length))
        return bytes
    }
}
