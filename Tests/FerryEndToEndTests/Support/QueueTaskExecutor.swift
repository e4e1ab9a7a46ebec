import Foundation

/// A task executor of one dispatch queue, for a test that must stall an in-process server's tasks on purpose
/// without stalling every other test's (which share the few cooperative threads).
final class QueueTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let queue = DispatchQueue(label: "ferry-tests.queue-executor")

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.queue.async {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }

    /// Blocks the queue, and with it every task that prefers this executor, for `duration`.
    func stall(for duration: Duration) {
        self.queue.async {
            Thread.sleep(for: duration)
        }
    }
}

extension Thread {
    /// Blocks the calling thread (never a cooperative one) for `duration`.
    static func sleep(for duration: Duration) {
        Thread.sleep(
            forTimeInterval: Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        )
    }
}
