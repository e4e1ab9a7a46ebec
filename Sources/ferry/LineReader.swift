import Synchronization

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

    private typealias Completion = @convention(c) (UnsafePointer<CChar>?, Int32) -> UnsafeMutablePointer<CChar>?

    private let readLineFunction: ReadLine
    private let addHistoryFunction: AddHistory

    /// The library's file names, newest first: the soname Debian and most Linux systems ship, then the
    /// development link.
    private static let libraryNames = ["libedit.so.2", "libedit.so.0", "libedit.so", "libedit.3.dylib"]

    static func load() -> LineEditor? {
        // libedit reads the prompt and the line as multibyte text in the C library's locale, which a Swift program
        // leaves at "C": a Chinese prompt made it crash. The user's locale if the system has it, else C.UTF-8.
        if setlocale(LC_CTYPE, "") == nil || String(cString: nl_langinfo(nl_item(CODESET))) != "UTF-8" {
            setlocale(LC_CTYPE, "C.UTF-8")
        }
        for name in Self.libraryNames {
            guard let library = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            // Never closed: the functions are used until the process ends.
            guard let readLine = dlsym(library, "readline"), let addHistory = dlsym(library, "add_history") else {
                dlclose(library)
                continue
            }
            // Tab completes: remote names after get, delete and rename, local paths after put, commands first.
            if let entry = dlsym(library, "rl_completion_entry_function"),
                let lineBuffer = dlsym(library, "rl_line_buffer")
            {
                ShellCompletion.lineBuffer.withLock { $0 = UInt(bitPattern: lineBuffer) }
                if let files = dlsym(library, "rl_filename_completion_function") {
                    ShellCompletion.fileCompletion.withLock { $0 = UInt(bitPattern: files) }
                }
                entry.assumingMemoryBound(to: Completion?.self).pointee = ShellCompletion.complete
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

/// What Tab offers in the shell, through libedit's `rl_completion_entry_function`: a C function called with the word
/// being completed and a count (0 for a new completion), returning one `malloc`ed match per call, then `NULL`.
///
/// Remote names come from a listing cached for the session (``remoteNames``), which the shell keeps up to date as its
/// own commands change the library; no completion ever waits for the network.
enum ShellCompletion {
    /// The library's names as this session last saw them.
    static let remoteNames = Mutex<[String]>([])
    /// The shell's commands, for the first word.
    static let commands = ["list", "get", "put", "delete", "rename", "help", "exit"]
    /// Addresses of libedit's `rl_line_buffer` and `rl_filename_completion_function`, 0 until loaded.
    fileprivate static let lineBuffer = Mutex<UInt>(0)
    fileprivate static let fileCompletion = Mutex<UInt>(0)
    /// The matches of the completion in progress.
    private static let matches = Mutex<[String]>([])

    /// The choices for `word` on `line`: commands for the first word; remote names after get, delete (rm) and
    /// rename (mv); `nil` after put, where local paths are completed.
    static func choices(for word: String, on line: String) -> [String]? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        let completingFirst = words.isEmpty || (words.count == 1 && !line.hasSuffix(" "))
        if completingFirst {
            return Self.commands.filter { $0.hasPrefix(word.lowercased()) }
        }
        switch words[0].lowercased() {
        case "get", "delete", "rm", "rename", "mv":
            return Self.remoteNames.withLock { names in names.filter { $0.hasPrefix(word) } }
        case "put":
            return nil
        default:
            return []
        }
    }

    fileprivate static let complete: @convention(c) (UnsafePointer<CChar>?, Int32) -> UnsafeMutablePointer<CChar>? = {
        text,
        state in
        let word = text.map { String(cString: $0) } ?? ""
        let lineAddress = ShellCompletion.lineBuffer.withLock { $0 }
        let line =
            UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>(bitPattern: lineAddress)?.pointee.map {
                String(cString: $0)
            } ?? ""
        guard let found = ShellCompletion.choices(for: word, on: line) else {
            // After put: libedit's own file name completion.
            typealias Files = @convention(c) (UnsafePointer<CChar>?, Int32) -> UnsafeMutablePointer<CChar>?
            let address = ShellCompletion.fileCompletion.withLock { $0 }
            guard let pointer = UnsafeRawPointer(bitPattern: address) else { return nil }
            return unsafeBitCast(pointer, to: Files.self)(text, state)
        }
        if state == 0 {
            ShellCompletion.matches.withLock { $0 = found }
        }
        return ShellCompletion.matches.withLock { matches in
            Int(state) < matches.count ? strdup(matches[Int(state)]) : nil
        }
    }
}
