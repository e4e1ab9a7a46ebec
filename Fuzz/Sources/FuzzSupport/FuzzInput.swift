/// Reads structured values from fuzz bytes. Running out of bytes yields zeros, so every input means something and
/// the fuzzer never wastes executions on "too short".
public struct FuzzInput {
    private let bytes: [UInt8]
    private var index = 0

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    public init(_ start: UnsafeRawPointer, _ count: Int) {
        self.bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    }

    public var isAtEnd: Bool { self.index >= self.bytes.count }

    public mutating func byte() -> UInt8 {
        guard self.index < self.bytes.count else { return 0 }
        defer { self.index += 1 }
        return self.bytes[self.index]
    }

    public mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value: T = 0
        for _ in 0..<(T.bitWidth / 8) {
            value = value << 8 | T(self.byte())
        }
        return value
    }

    /// Up to `count` bytes (fewer at the end of the input).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        let end = min(self.bytes.count, self.index + max(0, count))
        defer { self.index = end }
        return self.index < end ? Array(self.bytes[self.index..<end]) : []
    }

    public mutating func rest() -> [UInt8] {
        self.bytes(self.bytes.count - self.index)
    }
}
