import Dispatch
import FerryClient

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ctrl-C (or TERM, or HUP) while `ferry get` runs removes the hidden partial downloads beside their targets, which
/// nothing else would ever remove, then ends the process as the signal would have: status 128 + the signal.
enum Interruption {
    /// Called once, before the first download starts.
    static func removePartialDownloadsOnSignal() {
        _ = Self.sources
    }

    /// Kept for the life of the process: a signal source stops when released.
    nonisolated(unsafe) private static let sources: [any DispatchSourceSignal] = [SIGINT, SIGTERM, SIGHUP].map {
        number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            PartialDownloads.removeAll()
            exit(128 + number)
        }
        source.resume()
        return source
    }
}
