import ArgumentParser
import FerryClient
import FerryProtocol
import FerryTransport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Scripts get one line on stderr and a non-zero status for any failure. The line's control characters are escaped:
/// an error can carry the server's own message, which must not drive the terminal.
enum Failure {
    static func report(_ error: any Error) {
        let message = (error as? FerryClientError)?.description ?? "\(error)"
        Terminal.writeError("ferry: \(message.escapingControlCharacters)\n")
    }

    /// One file of several failed: the line names it, and the command goes on with the others.
    static func report(_ error: FerryClientError, about file: String) {
        Terminal.writeError(
            "ferry: \(file.escapingControlCharacters): \(error.description.escapingControlCharacters)\n"
        )
    }

    /// What a batch command did to its files.
    enum Batch {
        case downloaded, stored, deleted
    }

    /// The summary error of a command that failed for some of its files (each already reported).
    static func some(_ failed: Int, of total: Int, _ outcome: Batch) -> FerryClientError {
        let (failed, total) = ("\(failed)", "\(total)")
        return switch outcome {
        case .downloaded: .localFile(localized("%@ of %@ files not downloaded", failed, total))
        case .stored: .localFile(localized("%@ of %@ files not stored", failed, total))
        case .deleted: .localFile(localized("%@ of %@ files not deleted", failed, total))
        }
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
