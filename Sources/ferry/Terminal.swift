import FerryTransport

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
        text.withUTF8 { _ = BlockingFileIO.writeAll(STDERR_FILENO, UnsafeRawBufferPointer($0)) }
    }

    /// Writes straight to standard output, past `print`'s buffer: only for a command that prints nothing else.
    static func writeOutput(_ bytes: UnsafeRawBufferPointer) {
        _ = BlockingFileIO.writeAll(STDOUT_FILENO, bytes)
    }
}
