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
}
