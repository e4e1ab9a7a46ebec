import Synchronization

/// Slows down password guessing: each failed log-in from a host is answered only after a delay that doubles with
/// that host's recent failures (0.25 s, 0.5 s, 1 s … up to ``longestDelay``), whichever connection they came on.
/// A host's count is forgotten ``memory`` after its last failure, and a success clears it.
///
/// The table holds at most ``capacity`` hosts; past it, the ones that failed longest ago are forgotten first.
final class LoginThrottle: Sendable {
    private let state = Mutex<[PeerAddress: Record]>([:])

    private struct Record {
        var failures: Int
        var last: ContinuousClock.Instant
    }

    static let firstDelay = Duration.milliseconds(250)
    static let longestDelay = Duration.seconds(8)
    static let memory = Duration.seconds(15 * 60)
    static let capacity = 65_536

    /// Counts a failure from `peer`; returns how long to wait before answering it.
    func failed(_ peer: PeerAddress) -> Duration {
        let now = ContinuousClock.now
        return self.state.withLock { records in
            var record = records[peer] ?? Record(failures: 0, last: now)
            if now - record.last > Self.memory { record.failures = 0 }
            record.failures += 1
            record.last = now
            if records[peer] == nil, records.count >= Self.capacity {
                let oldest = records.sorted { $0.value.last < $1.value.last }.prefix(Self.capacity / 4)
                for (key, _) in oldest { records.removeValue(forKey: key) }
            }
            records[peer] = record
            let doublings = min(record.failures - 1, 5)
            return min(Self.firstDelay * (1 << doublings), Self.longestDelay)
        }
    }

    /// A successful log-in from `peer`: its count starts again.
    func succeeded(_ peer: PeerAddress) {
        self.state.withLock { _ = $0.removeValue(forKey: peer) }
    }
}
