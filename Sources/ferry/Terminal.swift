#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The little the CLI needs from the terminal.
enum Terminal {
    static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }
    static var stderrIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }

    static func writeError(_ text: String) {
        var text = text
        text.withUTF8 { Self.writeAll(UnsafeRawBufferPointer($0), to: STDERR_FILENO) }
    }

    /// Writes straight to standard output, past `print`'s buffer: only for a command that prints nothing else.
    static func writeOutput(_ bytes: UnsafeRawBufferPointer) {
        Self.writeAll(bytes, to: STDOUT_FILENO)
    }

    private static func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32) {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, base + offset, bytes.count - offset)
            if written < 0, errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
    }
}
