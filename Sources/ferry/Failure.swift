import ArgumentParser
import FerryClient

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Scripts get one line on stderr and a non-zero status for any failure.
enum Failure {
    static func report(_ error: any Error) {
        let message = (error as? FerryClientError)?.description ?? "\(error)"
        Terminal.writeError("ferry: \(Self.printable(message))\n")
    }

    /// One file of several failed: the line names it, and the command goes on with the others.
    static func report(_ error: FerryClientError, about file: String) {
        Terminal.writeError("ferry: \(Self.printable(file)): \(Self.printable(error.description))\n")
    }

    /// The text with control characters escaped (`\u{1b}`): an error can carry the server's own message, and an
    /// escape sequence in it must not clear the screen, move the cursor or set the clipboard.
    static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: Self.isControl) else { return text }
        var escaped = ""
        for scalar in text.unicodeScalars {
            if Self.isControl(scalar) {
                escaped += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// The summary error of a command that failed for some of its files (each already reported).
    static func some(_ failed: Int, of total: Int, _ verb: String) -> FerryClientError {
        .localFile("\(failed) of \(total) files not \(verb)")
    }

    /// Runs a one-shot command, turning any failure into a line on stderr and exit status 1.
    static func exitOnFailure(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            self.report(error)
            throw ExitCode.failure
        }
    }
}
