import FerryProtocol
import FerryTransport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How `list` shows a library: an aligned table for people, JSON for programs.
enum ListingFormatter {
    static func table(_ entries: [ListEntry]) -> String {
        var text: [UInt8] = []
        self.table(entries) { text.append(contentsOf: $0) }
        return String(decoding: text, as: UTF8.self)
    }

    /// The table in pieces of about 64 KiB, built as bytes rather than by appending `String`s: `ferry list` of a
    /// 10,000-file library then formats and prints it in a fraction of a millisecond, in memory it reuses.
    static func table(_ entries: [ListEntry], emit: (UnsafeRawBufferPointer) -> Void) {
        guard !entries.isEmpty else {
            Array((localized("(the library is empty)") + "\n").utf8).withUnsafeBytes(emit)
            return
        }
        let sizes = entries.map { Sizes.describe($0.size) }
        let sizeWidth = sizes.map(\.utf8.count).max() ?? 0
        // Files of one folder are often written within the same few seconds: each second is formatted once.
        var times: [Int64: String] = [:]
        // The longest line: the widest size, a name of 255 bytes, and a local time of a few dozen bytes.
        ByteWriter.inPieces(room: sizeWidth + ProtocolLimits.maximumNameLength + 256, emit: emit) { piece in
            for (entry, size) in zip(entries, sizes) {
                let second = self.split(entry.modified).seconds
                var time: String
                if let known = times[second] {
                    time = known
                } else {
                    time = self.localTime(second: second)
                    times[second] = time
                }
                var size = size
                var name = entry.name
                for _ in 0..<(sizeWidth - size.utf8.count) {
                    piece.write(UInt8(ascii: " "))
                }
                size.withUTF8 { piece.write(UnsafeRawBufferPointer($0)) }
                piece.write("  ")
                time.withUTF8 { piece.write(UnsafeRawBufferPointer($0)) }
                piece.write("  ")
                name.withUTF8 { piece.write(UnsafeRawBufferPointer($0)) }
                piece.write(UInt8(ascii: "\n"))
                piece.emitIfFull(emit)
            }
        }
        let count = entries.count == 1 ? localized("1 file") : localized("%@ files", "\(entries.count)")
        Array((count + "\n").utf8).withUnsafeBytes(emit)
    }

    /// The JSON array in pieces of about 64 KiB, written as bytes: a name is copied as it is unless it holds a
    /// character JSON must escape, and numbers and times are spelled digit by digit into the piece. (Built from
    /// `String`s, `ferry list --json` of 10,000 entries took 1.8 times as long as the table; appending `String`s'
    /// bytes to an array, formatting was still a third of the client's instructions, 2,000 per entry, against
    /// about 250 now.)
    static func json(_ entries: [ListEntry], emit: (UnsafeRawBufferPointer) -> Void) {
        // The longest entry: a name of 255 bytes, each escaped as `\u00XX`, and less than 200 bytes besides.
        ByteWriter.inPieces(room: 6 * ProtocolLimits.maximumNameLength + 256, emit: emit) { piece in
            piece.write("[")
            for (index, entry) in entries.enumerated() {
                piece.write(index > 0 ? ",\n {\"name\": " : "{\"name\": ")
                var name = entry.name
                let copied = name.withUTF8 { bytes in
                    guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0xC2 }) else {
                        return false
                    }
                    piece.write(UInt8(ascii: "\""))
                    piece.write(UnsafeRawBufferPointer(bytes))
                    piece.write(UInt8(ascii: "\""))
                    return true
                }
                if !copied {
                    var escaped = self.jsonString(entry.name)
                    escaped.withUTF8 { piece.write(UnsafeRawBufferPointer($0)) }
                }
                piece.write(", \"size\": ")
                piece.writeDecimal(entry.size)
                piece.write(", \"modified\": \"")
                piece.writeRFC3339(entry.modified)
                piece.write("\"}")
                piece.emitIfFull(emit)
            }
            piece.write("]\n")
        }
    }

    /// `2026-11-27 05:37`: the local time of that second since the epoch, to the minute.
    private static func localTime(second: Int64) -> String {
        var time = time_t(second)
        var parts = tm()
        localtime_r(&time, &parts)
        return "\(Int(parts.tm_year) + 1900)-\(self.two(Int(parts.tm_mon) + 1))-\(self.two(Int(parts.tm_mday))) "
            + "\(self.two(Int(parts.tm_hour))):\(self.two(Int(parts.tm_min)))"
    }

    /// Whole seconds (rounded down, also before 1970) and the nanoseconds after them; any `Int64` from the wire,
    /// `Int64.min` included, without overflow.
    fileprivate static func split(_ nanoseconds: Int64) -> (seconds: Int64, fraction: Int64) {
        let (seconds, fraction) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
        return fraction < 0 ? (seconds - 1, fraction + 1_000_000_000) : (seconds, fraction)
    }

    private static func two(_ value: Int) -> String {
        value < 10 ? "0\(value)" : "\(value)"
    }

    static func jsonString(_ string: String) -> String {
        var escaped = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            default:
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                    let hex = String(scalar.value, radix: 16)
                    escaped += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    escaped.unicodeScalars.append(scalar)
                }
            }
        }
        return escaped + "\""
    }
}

/// Bytes written into memory the caller owns, in order; a write that would pass its end stops the program
/// rather than write past it (the callers size the memory so that none does).
private struct ByteWriter {
    private let memory: UnsafeMutableRawBufferPointer
    /// How many bytes are written.
    private(set) var count = 0

    private init(_ memory: UnsafeMutableRawBufferPointer) {
        self.memory = memory
    }

    /// What a piece holds before ``emitIfFull(_:)`` hands it on.
    static let pieceLength = 64 * 1024

    /// Runs `body` with a writer over memory for one piece and `room` more (what `body` may write after the piece
    /// is full and before it calls ``emitIfFull(_:)``), then emits what is left: output in pieces of about 64 KiB,
    /// in memory reused for each.
    static func inPieces(
        room: Int,
        emit: (UnsafeRawBufferPointer) -> Void,
        _ body: (inout ByteWriter) -> Void
    ) {
        withUnsafeTemporaryAllocation(byteCount: Self.pieceLength + room, alignment: 1) { memory in
            var writer = ByteWriter(memory)
            body(&writer)
            emit(writer.written)
        }
    }

    /// Emits what is written and starts again, once it is a piece's worth.
    mutating func emitIfFull(_ emit: (UnsafeRawBufferPointer) -> Void) {
        guard self.count >= Self.pieceLength else { return }
        emit(self.written)
        self.count = 0
    }

    /// What is written so far.
    private var written: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self.memory[..<self.count])
    }

    mutating func write(_ byte: UInt8) {
        precondition(self.count < self.memory.count, "ByteWriter full")
        self.memory[self.count] = byte
        self.count += 1
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count <= self.memory.count - self.count, "ByteWriter full")
        UnsafeMutableRawBufferPointer(rebasing: self.memory[self.count..<self.count + bytes.count]).copyMemory(
            from: bytes
        )
        self.count += bytes.count
    }

    mutating func write(_ text: StaticString) {
        text.withUTF8Buffer { self.write(UnsafeRawBufferPointer($0)) }
    }

    /// `value` in decimal, without a `String` in between.
    mutating func writeDecimal(_ value: UInt64) {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        self.writeDigits(value, count: digits)
    }

    /// The last `count` decimal digits of `value`, zeros in front: a field of fixed width.
    mutating func writeDigits(_ value: UInt64, count: Int) {
        precondition(count <= self.memory.count - self.count, "ByteWriter full")
        var remaining = value
        var position = self.count + count
        while position > self.count {
            position -= 1
            let (quotient, digit) = remaining.quotientAndRemainder(dividingBy: 10)
            self.memory[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: digit)
            remaining = quotient
        }
        self.count += count
    }

    /// A time from the wire (nanoseconds since 1970, any `Int64`) in RFC 3339, UTC, as `gmtime` gives its date
    /// (`2023-11-14T22:13:20.123456789Z`, no fraction when it is zero), with no `String` and no lookup: the calendar
    /// date comes from the day count in integer arithmetic (the proleptic Gregorian calendar, as `gmtime`'s).
    mutating func writeRFC3339(_ nanoseconds: Int64) {
        let (seconds, fraction) = ListingFormatter.split(nanoseconds)
        // Floor division into days and the second of the day; |seconds| < 9.3e9, so nothing here overflows.
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Howard Hinnant's civil_from_days: eras of 400 years, counted from 0000-03-01.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        // Between 1677 and 2262 for any Int64 of nanoseconds: never negative.
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        // Every field has a fixed width: 4 digits of year (1677 to 2262), 2 of the rest, 9 of nanoseconds.
        self.writeDigits(UInt64(clamping: year), count: 4)
        self.write(UInt8(ascii: "-"))
        self.writeDigits(UInt64(clamping: month), count: 2)
        self.write(UInt8(ascii: "-"))
        self.writeDigits(UInt64(clamping: day), count: 2)
        self.write(UInt8(ascii: "T"))
        self.writeDigits(UInt64(clamping: secondOfDay / 3600), count: 2)
        self.write(UInt8(ascii: ":"))
        self.writeDigits(UInt64(clamping: secondOfDay / 60 % 60), count: 2)
        self.write(UInt8(ascii: ":"))
        self.writeDigits(UInt64(clamping: secondOfDay % 60), count: 2)
        if fraction > 0 {
            self.write(UInt8(ascii: "."))
            self.writeDigits(UInt64(clamping: fraction), count: 9)
        }
        self.write(UInt8(ascii: "Z"))
    }
}
