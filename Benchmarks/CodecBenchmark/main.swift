// Codec throughput next to zlib's crc32() alone, so the framing's cost beyond the checksum is visible.
//
//     swift run -c release CodecBenchmark [--chunk BYTES] [--total MIB] [--rounds N]
//
// Every variant moves the same payload bytes; the figure is payload GB/s (10^9 bytes). The measurements are
// interleaved (A B C … A B C …) and the median of the rounds is reported, because this machine is shared.
import FerryProtocol
import Foundation
import NIOCore

struct Options {
    var chunkLength = ProtocolLimits.defaultDataChunkLength
    var totalBytes = 4 << 30
    var rounds = 7

    init(arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--chunk": self.chunkLength = iterator.next().flatMap(Int.init) ?? self.chunkLength
            case "--total": self.totalBytes = (iterator.next().flatMap(Int.init) ?? 4096) << 20
            case "--rounds": self.rounds = iterator.next().flatMap(Int.init) ?? self.rounds
            default:
                print("usage: CodecBenchmark [--chunk BYTES] [--total MIB] [--rounds N]")
                exit(2)
            }
        }
    }
}

let options = Options(arguments: CommandLine.arguments)
let allocator = ByteBufferAllocator()
var generator = SystemRandomNumberGenerator()
let payload = ByteBuffer(bytes: (0..<options.chunkLength).map { _ in UInt8.random(in: 0...255, using: &generator) })
let iterations = max(1, options.totalBytes / options.chunkLength)
let encodedFrame: ByteBuffer = {
    var buffer = ByteBuffer()
    FrameSerializer.serialize(.data(DataChunk(payload)), into: &buffer)
    return buffer
}()

/// Keeps results alive so the optimiser cannot drop the work.
nonisolated(unsafe) var sink: UInt32 = 0

func crcAlone() {
    for _ in 0..<iterations {
        sink &+= CRC32.checksum(payload)
    }
}

/// What a sender does: checksum the chunk once, frame it without copying (header + payload + trailer).
func encodeZeroCopy() {
    for _ in 0..<iterations {
        let chunk = DataChunk(payload)
        let (header, trailer) = FrameSerializer.dataFrameEnvelope(for: chunk, allocator: allocator)
        sink &+= UInt32(header.readableBytes + trailer.readableBytes) &+ chunk.crc32
    }
}

/// The general path: the payload is copied once into the output buffer.
func encodeCopying() {
    var output = allocator.buffer(capacity: options.chunkLength + FrameLayout.overhead)
    for _ in 0..<iterations {
        output.clear()
        FrameSerializer.serialize(.data(DataChunk(payload)), into: &output)
        sink &+= UInt32(truncatingIfNeeded: output.readableBytes)
    }
}

/// What a receiver does: parse, verify the frame CRC, decode to a DataChunk carrying the payload's CRC.
func decode() {
    var parser = FrameParser(maximumPayloadLength: ProtocolLimits.defaultMaximumFramePayload)
    for _ in 0..<iterations {
        parser.append(bytes: encodedFrame)
        guard let frame = try? parser.nextFrame(), case .data(let chunk)? = try? Message(decoding: frame) else {
            fatalError("the benchmark's own frame failed to decode")
        }
        sink &+= chunk.crc32
    }
}

func encodeThenDecode() {
    var parser = FrameParser(maximumPayloadLength: ProtocolLimits.defaultMaximumFramePayload)
    var output = allocator.buffer(capacity: options.chunkLength + FrameLayout.overhead)
    for _ in 0..<iterations {
        output.clear()
        FrameSerializer.serialize(.data(DataChunk(payload)), into: &output)
        parser.append(bytes: output)
        guard let frame = try? parser.nextFrame(), case .data(let chunk)? = try? Message(decoding: frame) else {
            fatalError("the benchmark's own frame failed to decode")
        }
        sink &+= chunk.crc32
    }
}

let cases: [(name: String, run: () -> Void)] = [
    ("zlib crc32() alone", crcAlone),
    ("encode DATA (zero-copy envelope)", encodeZeroCopy),
    ("encode DATA (copy into buffer)", encodeCopying),
    ("decode DATA (parse + verify)", decode),
    ("encode + decode (2 CRC passes)", encodeThenDecode),
]

var samples = Array(repeating: [Double](), count: cases.count)
for _ in 0..<options.rounds {
    for (index, benchmark) in cases.enumerated() {
        let clock = ContinuousClock()
        let elapsed = clock.measure { benchmark.run() }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        samples[index].append(Double(iterations * options.chunkLength) / seconds / 1e9)
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted[sorted.count / 2]
}

let crcRate = median(samples[0])
print(
    "chunk \(options.chunkLength) B, \((iterations * options.chunkLength) >> 20) MiB per run, median of \(options.rounds) rounds"
)
print("| measurement | GB/s | vs crc32 alone |")
print("|---|---:|---:|")
for (index, benchmark) in cases.enumerated() {
    let rate = median(samples[index])
    // encode+decode checksums every byte twice, so its fair reference is half crc32's rate.
    let reference = index == cases.count - 1 ? crcRate / 2 : crcRate
    print(
        "| \(benchmark.name) | \(String(format: "%.2f", rate)) | \(String(format: "%.0f%%", rate / reference * 100)) |"
    )
}
if sink == 42 { print("") }
