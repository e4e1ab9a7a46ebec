import Foundation

/// Runs async work to completion from libFuzzer's synchronous entry point, on the calling thread.
///
/// The work runs as a task that prefers a `CallingThreadExecutor`, and the calling thread runs that executor's jobs
/// until the task has finished. Every job of the task (and of its child tasks and the unstructured tasks it starts,
/// which inherit the preference) runs here, so when this function returns the task has fully completed, including
/// the runtime's own completion step: nothing from one input is still running while libFuzzer starts the next, and
/// a crash always points at the input that caused it. (An earlier version signalled a semaphore at the end of the
/// task body, which let the runtime finish that task on another thread while the next input had already begun.)
public func runBlocking(_ body: @escaping @Sendable () async -> Void) {
    let executor = CallingThreadExecutor()
    Task(executorPreference: executor) {
        await body()
        executor.finish()
    }
    executor.runUntilFinished()
}

/// A task executor whose jobs run on whichever thread calls `runUntilFinished()`.
final class CallingThreadExecutor: TaskExecutor, @unchecked Sendable {
    // Guarded by `condition`.
    private var jobs: [UnownedJob] = []
    private var isFinished = false
    private let condition = NSCondition()

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.condition.lock()
        self.jobs.append(job)
        self.condition.signal()
        self.condition.unlock()
    }

    /// Called by the task as its last step. The job that calls it returns to `runUntilFinished()` only after the
    /// runtime has completed the task.
    func finish() {
        self.condition.lock()
        self.isFinished = true
        self.condition.unlock()
    }

    func runUntilFinished() {
        while true {
            self.condition.lock()
            while self.jobs.isEmpty && !self.isFinished {
                self.condition.wait()
            }
            if self.jobs.isEmpty {
                self.condition.unlock()
                return
            }
            let job = self.jobs.removeFirst()
            self.condition.unlock()
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
