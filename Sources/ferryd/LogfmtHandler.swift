import FerryTransport
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// ferryd's log lines on standard error, laid out like swift-log's `StreamLogHandler` (time, level, label,
/// metadata, source, message), with the metadata in logfmt: a value is written as it is only when it is a plain
/// token, and in double quotes, with `"`, `\` and control characters escaped, when it holds anything else.
///
/// Values come from clients (file names): written bare, a name like `x.txt result=ok operation=EXIT` forged fields
/// of its own in a request's line, and a tool reading the log saw an EXIT that succeeded.
struct LogfmtHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info
    private let label: String

    init(label: String) {
        self.label = label
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var metadata = self.metadata
        if let explicit = event.metadata {
            metadata.merge(explicit) { _, explicit in explicit }
        }
        if let error = event.error {
            metadata["error.message"] = "\(error)"
        }
        var line = "\(Self.timestamp()) \(event.level) \(self.label):"
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " \(Self.field(key))=\(Self.field("\(value)"))"
        }
        line += " [\(event.source)] \(Self.oneLine(event.message.description))\n"
        // One write per line, so lines from several threads never interleave; a failed write is dropped.
        _ = Array(line.utf8).withUnsafeBytes { BlockingFileIO.writeAll(2, $0) }
    }

    /// `text` as a logfmt key or value: bare if it is a plain token, quoted and escaped otherwise.
    static func field(_ text: String) -> String {
        let plain =
            !text.isEmpty
            && text.unicodeScalars.allSatisfy { scalar in
                scalar.value > 0x20 && scalar.value != 0x7F && !(0x80...0x9F).contains(scalar.value)
                    && scalar != "=" && scalar != "\"" && scalar != "\\"
            }
        guard !plain else { return text }
        var quoted = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value):
                quoted += "\\u{\(String(scalar.value, radix: 16))}"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// A message on one line: it never starts a line of its own in the log.
    private static func oneLine(_ message: String) -> String {
        var line = ""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            default: line.unicodeScalars.append(scalar)
            }
        }
        return line
    }

    private static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
