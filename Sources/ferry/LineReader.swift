#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads the shell's input: with libedit's line editing and history on a terminal, plain lines from a pipe or
/// where libedit is not installed.
struct LineReader {
    let interactive = Terminal.stdinIsTerminal
    private let editor: LineEditor?

    init() {
        self.editor = self.interactive ? LineEditor.load() : nil
    }

    /// The next line without its newline, or `nil` at end of input.
    func next(prompt: String) -> String? {
        guard let editor = self.editor else {
            if self.interactive {
                print(prompt, terminator: "")
                fflush(nil)
            }
            return readLine(strippingNewline: true)
        }
        return editor.readLine(prompt: prompt)
    }
}

/// libedit's readline-compatible functions, loaded when the shell starts rather than linked.
///
/// Linking needs libedit's development files (`libedit-dev`), which a fresh machine lacks even where the library
/// itself (`libedit2`) is installed: `swift build` then stopped at `editline/readline.h`. Loaded at run time,
/// building needs nothing beyond zlib's headers, and a machine without libedit gets a shell without line editing
/// instead of a binary that does not start.
private struct LineEditor: @unchecked Sendable {
    private typealias ReadLine = @convention(c) (UnsafePointer<CChar>?) -> UnsafeMutablePointer<CChar>?
    private typealias AddHistory = @convention(c) (UnsafePointer<CChar>?) -> Int32

    private let readLineFunction: ReadLine
    private let addHistoryFunction: AddHistory

    /// The library's file names, newest first: the soname Debian and most Linux systems ship, then the
    /// development link.
    private static let libraryNames = ["libedit.so.2", "libedit.so.0", "libedit.so", "libedit.3.dylib"]

    static func load() -> LineEditor? {
        for name in Self.libraryNames {
            guard let library = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            // Never closed: the functions are used until the process ends.
            guard let readLine = dlsym(library, "readline"), let addHistory = dlsym(library, "add_history") else {
                dlclose(library)
                continue
            }
            return LineEditor(
                readLineFunction: unsafeBitCast(readLine, to: ReadLine.self),
                addHistoryFunction: unsafeBitCast(addHistory, to: AddHistory.self)
            )
        }
        return nil
    }

    /// The next line without its newline, or `nil` at end of input; a line with more than blanks joins the
    /// history.
    func readLine(prompt: String) -> String? {
        guard let raw = prompt.withCString({ self.readLineFunction($0) }) else {
            return nil
        }
        defer { free(raw) }
        let line = String(cString: raw)
        if !line.allSatisfy(\.isWhitespace) {
            _ = self.addHistoryFunction(raw)
        }
        return line
    }
}
