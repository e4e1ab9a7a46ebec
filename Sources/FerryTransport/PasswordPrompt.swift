#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a password from the terminal without showing it, as `ssh` and `sudo` do; or a line from standard input when
/// that is not a terminal and the caller allows it.
public enum PasswordPrompt {
    /// Shows `prompt` on standard error and reads one line from standard input with echo off. `nil` at end of
    /// input or when standard input is not a terminal.
    public static func read(_ prompt: String) -> String? {
        guard isatty(0) == 1 else { return nil }
        var saved = termios()
        guard tcgetattr(0, &saved) == 0 else { return nil }
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSAFLUSH, &quiet)
        defer {
            tcsetattr(0, TCSAFLUSH, &saved)
            Self.writeError("\n")
        }
        Self.writeError(prompt)
        return Self.line()
    }

    /// One line from standard input, without its newline; `nil` at end of input.
    public static func line() -> String? {
        readLine(strippingNewline: true)
    }

    private static func writeError(_ text: String) {
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            var rest = raw[...]
            while !rest.isEmpty {
                let count = write(2, UnsafeRawBufferPointer(rebasing: rest).baseAddress, rest.count)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { return }
                rest = rest.dropFirst(count)
            }
        }
    }
}
