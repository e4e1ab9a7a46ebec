import Synchronization

/// Set once, from any thread (a reader's own, say); read by a test's task, which polls it.
final class Flag: Sendable {
    private let value = Mutex(false)

    func set() {
        self.value.withLock { $0 = true }
    }

    var isSet: Bool {
        self.value.withLock { $0 }
    }

    /// Returns once the flag is set, or after `limit`: the caller checks ``isSet`` where it matters. Polls every
    /// 10 ms, so the task that waits never blocks a thread the setter may need.
    func wait(upTo limit: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + limit
        while !self.isSet, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
