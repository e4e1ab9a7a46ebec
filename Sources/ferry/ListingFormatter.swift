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
        let pieceLength = 64 * 1024
        var piece: [UInt8] = []
        piece.reserveCapacity(pieceLength + 2 * 1024)
        for (entry, size) in zip(entries, sizes) {
            let second = self.split(entry.modified).seconds
            let time: String
            if let known = times[second] {
                time = known
            } else {
                time = self.localTime(second: second)
                times[second] = time
            }
            piece.append(contentsOf: repeatElement(UInt8(ascii: " "), count: sizeWidth - size.utf8.count))
            piece.append(contentsOf: size.utf8)
            piece.append(contentsOf: "  ".utf8)
            piece.append(contentsOf: time.utf8)
            piece.append(contentsOf: "  ".utf8)
            piece.append(contentsOf: entry.name.utf8)
            piece.append(UInt8(ascii: "\n"))
            if piece.count >= pieceLength {
                piece.withUnsafeBytes(emit)
                piece.removeAll(keepingCapacity: true)
            }
        }
        let count = entries.count == 1 ? localized("1 file") : localized("%@ files", "\(entries.count)")
        piece.append(contentsOf: count.utf8)
        piece.append(UInt8(ascii: "\n"))
        piece.withUnsafeBytes(emit)
    }

    static func json(_ entries: [ListEntry]) -> String {
        var text: [UInt8] = []
        self.json(entries) { text.append(contentsOf: $0) }
        return String(decoding: text, as: UTF8.self)
    }

    /// The JSON array in pieces of about 64 KiB, written as bytes as the table is: a name is copied as it is unless
    /// it holds a character JSON must escape, and each second's RFC 3339 text is made once. (Built from `String`s,
    /// `ferry list --json` of 10,000 entries took 1.8 times as long as the table.)
    static func json(_ entries: [ListEntry], emit: (UnsafeRawBufferPointer) -> Void) {
        let pieceLength = 64 * 1024
        var piece: [UInt8] = []
        piece.reserveCapacity(pieceLength + 2 * 1024)
        piece.append(UInt8(ascii: "["))
        var times: [Int64: [UInt8]] = [:]
        for (index, entry) in entries.enumerated() {
            if index > 0 {
                piece.append(contentsOf: [UInt8(ascii: ","), UInt8(ascii: "\n"), UInt8(ascii: " ")])
            }
            piece.append(contentsOf: #"{"name": "#.utf8)
            let name = entry.name.utf8
            if name.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 == 0xC2 })
            {
                piece.append(contentsOf: self.jsonString(entry.name).utf8)
            } else {
                piece.append(UInt8(ascii: "\""))
                piece.append(contentsOf: name)
                piece.append(UInt8(ascii: "\""))
            }
            piece.append(contentsOf: #", "size": "#.utf8)
            piece.append(contentsOf: String(entry.size).utf8)
            piece.append(contentsOf: #", "modified": ""#.utf8)
            // RFC 3339 as rfc3339(_:) writes it: the second's text made once, then the nanoseconds, if any.
            let (second, fraction) = self.split(entry.modified)
            if let known = times[second] {
                piece.append(contentsOf: known)
            } else {
                let text = Array(self.rfc3339(second: second).utf8)
                times[second] = text
                piece.append(contentsOf: text)
            }
            if fraction > 0 {
                piece.append(UInt8(ascii: "."))
                let start = piece.count
                piece.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: 9))
                var digits = fraction
                for position in stride(from: start + 8, through: start, by: -1) where digits > 0 {
                    piece[position] = UInt8(ascii: "0") + UInt8(digits % 10)
                    digits /= 10
                }
            }
            piece.append(contentsOf: [UInt8(ascii: "Z"), UInt8(ascii: "\""), UInt8(ascii: "}")])
            if piece.count >= pieceLength {
                piece.withUnsafeBytes(emit)
                piece.removeAll(keepingCapacity: true)
            }
        }
        piece.append(contentsOf: [UInt8(ascii: "]"), UInt8(ascii: "\n")])
        piece.withUnsafeBytes(emit)
    }

    /// RFC 3339 in UTC, with nanoseconds when the time has them: `2023-11-14T22:13:20Z`.
    static func rfc3339(_ nanoseconds: Int64) -> String {
        let (seconds, fraction) = self.split(nanoseconds)
        var text = self.rfc3339(second: seconds)
        if fraction > 0 {
            let digits = String(fraction)
            text += "." + String(repeating: "0", count: 9 - digits.count) + digits
        }
        return text + "Z"
    }

    /// `2023-11-14T22:13:20`: a second in UTC, without its fraction or zone.
    private static func rfc3339(second: Int64) -> String {
        var time = time_t(second)
        var parts = tm()
        gmtime_r(&time, &parts)
        let year = String(Int(parts.tm_year) + 1900)
        return String(repeating: "0", count: Swift.max(0, 4 - year.count)) + year
            + "-\(self.two(Int(parts.tm_mon) + 1))-\(self.two(Int(parts.tm_mday)))"
            + "T\(self.two(Int(parts.tm_hour))):\(self.two(Int(parts.tm_min))):\(self.two(Int(parts.tm_sec)))"
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
    private static func split(_ nanoseconds: Int64) -> (seconds: Int64, fraction: Int64) {
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
