import FerryClient

/// What `get` and `put` show while they move several files: a progress bar per file on a terminal, a line per file
/// done, a line per file that failed (which does not stop the others), and the command's outcome.
final class BatchReport {
    private let labels: [String]
    private let subjects: [String]
    private var bars: [Int: ProgressBar] = [:]
    private var failures: [FerryClientError] = []

    /// - Parameters:
    ///   - labels: each file's progress bar label.
    ///   - subjects: how each file is named in its failure line.
    init(labels: [String], subjects: [String]) {
        self.labels = labels
        self.subjects = subjects
    }

    func progress(_ index: Int, _ done: UInt64, _ total: UInt64) {
        let bar = self.bars[index] ?? ProgressBar(label: self.labels[index])
        self.bars[index] = bar
        bar.update(done, total)
    }

    /// Ends the bars' lines, so that a notice (resuming, retrying) starts a line of its own; they draw again on
    /// their next progress.
    func interrupt() {
        for bar in self.bars.values {
            bar.finish()
        }
    }

    /// Reports one file's outcome; `success` is its line on stdout.
    func completed(_ index: Int, _ result: Result<UInt64, FerryClientError>, success: (UInt64) -> String) {
        self.bars.removeValue(forKey: index)?.finish()
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
    func finish(_ verb: String, single: Bool) throws {
        if let only = self.failures.first, single {
            throw only
        } else if !self.failures.isEmpty {
            throw Failure.some(self.failures.count, of: self.labels.count, verb)
        }
    }
}
