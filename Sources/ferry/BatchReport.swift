import FerryClient
import FerryTransport

/// What `get` and `put` show while they move files: on a terminal, a progress bar for a single file, or for several
/// one overall line (files done of all, bytes, rate, time left, as `rsync --info=progress2` shows), then a line per
/// file done, a line per file that failed (which does not stop the others), and the command's outcome.
final class BatchReport {
    private let labels: [String]
    private let subjects: [String]
    private var bars: [Int: ProgressBar] = [:]
    private var failures: [FerryClientError] = []
    /// For several files: the one line, and each file's bytes moved and expected as last reported.
    private let overall: ProgressBar?
    private var moved: [Int: (done: UInt64, total: UInt64)] = [:]
    private var movedSum: (done: UInt64, total: UInt64) = (0, 0)
    private var finished = 0

    /// - Parameters:
    ///   - labels: each file's progress bar label.
    ///   - subjects: how each file is named in its failure line.
    init(labels: [String], subjects: [String]) {
        self.labels = labels
        self.subjects = subjects
        self.overall = labels.count > 1 ? ProgressBar(label: "0/\(labels.count) files") : nil
    }

    func progress(_ index: Int, _ done: UInt64, _ total: UInt64) {
        guard let overall = self.overall else {
            let bar = self.bars[index] ?? ProgressBar(label: self.labels[index])
            self.bars[index] = bar
            bar.update(done, total)
            return
        }
        // The sums change by this file's difference: no pass over every file per update.
        let before = self.moved[index] ?? (0, 0)
        self.moved[index] = (done, total)
        self.movedSum.done = self.movedSum.done - before.done + done
        self.movedSum.total = self.movedSum.total - before.total + total
        overall.label = "\(self.finished)/\(self.labels.count) files"
        overall.update(self.movedSum.done, self.movedSum.total)
    }

    /// Ends the bars' lines, so that a notice (resuming, retrying) starts a line of its own; they draw again on
    /// their next progress.
    func interrupt() {
        for bar in self.bars.values {
            bar.finish()
        }
        self.overall?.finish()
    }

    /// Reports one file's outcome; `success` is its line on stdout.
    func completed(_ index: Int, _ result: Result<UInt64, FerryClientError>, success: (UInt64) -> String) {
        self.bars.removeValue(forKey: index)?.finish()
        self.overall?.finish()
        self.finished += 1
        switch result {
        case .success(let bytes):
            print(success(bytes))
        case .failure(let error):
            self.failures.append(error)
            if self.labels.count > 1 {
                Failure.report(error, about: self.subjects[index])
            }
        }
    }

    /// Throws unless every file went through: a single file's own error, or a count of the failures (each
    /// already reported on its line).
    func finish(_ outcome: Failure.Batch, single: Bool) throws {
        if let only = self.failures.first, single {
            throw only
        } else if !self.failures.isEmpty {
            throw Failure.some(self.failures.count, of: self.labels.count, outcome)
        }
    }
}
