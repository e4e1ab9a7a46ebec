#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A one-line progress bar on stderr: bytes, percentage, rate and time left. Drawn only when stderr is a
/// terminal, at most ten times a second, so piped output stays clean and fast.
final class ProgressBar {
    private static let longestEstimate: Double = 365 * 24 * 3600
    /// What the line starts with: a file's name, or how many files of a batch are done.
    var label: String
    private let enabled = Terminal.stderrIsTerminal
    private let started = ContinuousClock.now
    private var lastDrawn: ContinuousClock.Instant?
    private var drewSomething = false

    init(label: String) {
        self.label = label
    }

    func update(_ done: UInt64, _ total: UInt64) {
        guard self.enabled else { return }
        let now = ContinuousClock.now
        if let last = self.lastDrawn, now - last < .milliseconds(100), done < total { return }
        self.lastDrawn = now
        let elapsed = self.seconds(now - self.started)
        let fraction = total == 0 ? 1 : min(Double(done) / Double(total), 1)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let remaining = rate > 0 ? Double(total - min(done, total)) / rate : 0
        let width = 24
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let percent = Int(fraction * 100)
        let line =
            "\r\(self.label.prefix(24)) [\(bar)] \(percent)% \(Sizes.describe(done))/\(Sizes.describe(total)) "
            + "\(Sizes.rate(rate)) ETA \(self.clock(remaining))\u{1B}[K"
        Terminal.writeError(line)
        self.drewSomething = true
    }

    /// Ends the bar's line, if it drew one, so whatever is written next starts a line of its own. Once.
    func finish() {
        if self.drewSomething {
            Terminal.writeError("\n")
            self.drewSomething = false
        }
    }

    private func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// `m:ss`, or `--:--` beyond a year: a size announced by the server can make the estimate absurd.
    private func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0, seconds < Self.longestEstimate else { return "--:--" }
        let total = Int(seconds.rounded())
        let minutes = total / 60
        let rest = total % 60
        return "\(minutes):\(rest < 10 ? "0" : "")\(rest)"
    }
}
