import CEditLine

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the shell's input: with libedit's line editing and history on a terminal, plain lines from a pipe.
struct LineReader {
    let interactive = Terminal.stdinIsTerminal

    /// The next line without its newline, or `nil` at end of input.
    func next(prompt: String) -> String? {
        guard self.interactive else {
            return readLine(strippingNewline: true)
        }
        guard let raw = readline(prompt) else {
            return nil
        }
        defer { free(raw) }
        let line = String(cString: raw)
        if !line.allSatisfy(\.isWhitespace) {
            add_history(raw)
        }
        return line
    }
}
