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
        // Never read a password that would be shown: if echo cannot be turned off, do not ask.
        guard tcsetattr(0, TCSAFLUSH, &quiet) == 0 else { return nil }
        // Ctrl-C at the prompt must not leave the terminal without echo: put it back, then die of the signal.
        savedTerminal = saved
        let previous = [SIGINT, SIGTERM, SIGHUP].map { signal($0, restoreTerminalAndDie) }
        defer {
            tcsetattr(0, TCSAFLUSH, &saved)
            for (number, handler) in zip([SIGINT, SIGTERM, SIGHUP], previous) {
                signal(number, handler)
            }
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
        _ = Array(text.utf8).withUnsafeBytes { BlockingFileIO.writeAll(2, $0) }
    }
}

/// The terminal's settings while a password is being read, for ``restoreTerminalAndDie``. Written only before the
/// handlers that read it are installed.
nonisolated(unsafe) private var savedTerminal = termios()

/// Restores the terminal and ends the process as the signal would have (async-signal-safe calls only).
private func restoreTerminalAndDie(_ number: Int32) {
    tcsetattr(0, TCSANOW, &savedTerminal)
    signal(number, SIG_DFL)
    raise(number)
}
