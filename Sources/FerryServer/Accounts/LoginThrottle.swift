import NIOPosix
import Synchronization

/// Slows down password guessing, per host and for the whole server.
///
/// - Per host: a host with recent failures may try again only after a delay that doubles with them (0.25 s,
///   0.5 s, 1 s … up to ``longestDelay``), on whatever connection it comes: the wait is taken *before* the password
///   is checked, so closing a connection that does not answer at once and opening another gains nothing. A failure
///   is also answered only after that delay. A host's count is forgotten ``memory`` after its last failure; a
///   success does not clear it (one account's success must not reset the guesses against another's). One AUTH per
///   host is checked at a time; another that comes meanwhile waits its turn.
/// - For the server: passwords are checked on a thread pool of their own (scrypt takes tens of milliseconds and
///   32 MiB each), at most ``simultaneousChecks`` at once, with at most ``queuedChecks`` waiting: a flood of AUTHs
///   cannot hold the pool that file I/O runs on, nor unbounded memory. Past the queue, an AUTH is told the server is
///   busy (208).
///
/// The table holds at most ``capacity`` hosts; past it, the ones that failed longest ago are forgotten first.
final class LoginThrottle: Sendable {
    private let state = Mutex(State())
    private let checks = NIOThreadPool(numberOfThreads: LoginThrottle.simultaneousChecks)

    private struct State {
        var hosts: [PeerAddress: Record] = [:]
        var queued = 0
        var started = false
    }

    private struct Record {
        var failures = 0
        var last = ContinuousClock.now
        var checking = false
    }

    static let firstDelay = Duration.milliseconds(250)
    static let longestDelay = Duration.seconds(8)
    static let memory = Duration.seconds(15 * 60)
    static let capacity = 65_536
    static let simultaneousChecks = 2
    static let queuedChecks = 64

    deinit {
        self.checks.shutdownGracefully { _ in }
    }

    /// The server is too busy checking passwords to queue another.
    struct Busy: Error {}

    /// Checks a log-in from `peer` with `check` (which hashes the password), after the host's delay and in its
    /// turn; on failure, answers only after the delay the failure earned. Returns what `check` returned.
    ///
    /// - Throws: ``Busy`` past the queue; `CancellationError` if the session ends meanwhile.
    func check<Account: Sendable>(
        from peer: PeerAddress,
        _ check: @escaping @Sendable () -> Account?
    ) async throws -> Account? {
        // One check per host at a time, taken after its delay.
        while true {
            let wait: Duration? = self.state.withLock { state in
                var record = state.hosts[peer] ?? Record()
                if ContinuousClock.now - record.last > Self.memory { record.failures = 0 }
                let notBefore = record.last + Self.delay(after: record.failures)
                guard !record.checking, ContinuousClock.now >= notBefore || record.failures == 0 else {
                    return record.checking ? Self.firstDelay : notBefore - ContinuousClock.now
                }
                record.checking = true
                state.hosts[peer] = record
                return nil
            }
            guard let wait else { break }
            try await Task.sleep(for: wait)
        }
        defer { self.state.withLock { $0.hosts[peer]?.checking = false } }
        let admitted = self.state.withLock { state in
            guard state.queued < Self.queuedChecks else { return false }
            state.queued += 1
            if !state.started {
                state.started = true
                self.checks.start()
            }
            return true
        }
        guard admitted else { throw Busy() }
        let account: Account?
        do {
            account = try await self.checks.runIfActive(check)
            self.state.withLock { $0.queued -= 1 }
        } catch {
            self.state.withLock { $0.queued -= 1 }
            throw error
        }
        guard account == nil else { return account }
        let delay = self.failed(peer)
        try await Task.sleep(for: delay)
        return nil
    }

    /// Counts a failure from `peer`; returns the delay it earned.
    private func failed(_ peer: PeerAddress) -> Duration {
        let now = ContinuousClock.now
        return self.state.withLock { state in
            var record = state.hosts[peer] ?? Record()
            if now - record.last > Self.memory { record.failures = 0 }
            record.failures += 1
            record.last = now
            if state.hosts[peer] == nil, state.hosts.count >= Self.capacity {
                let oldest = state.hosts.filter { !$0.value.checking }.sorted { $0.value.last < $1.value.last }
                for (key, _) in oldest.prefix(Self.capacity / 4) { state.hosts.removeValue(forKey: key) }
            }
            state.hosts[peer] = record
            return Self.delay(after: record.failures)
        }
    }

    /// The wait before a host's next attempt, and before its latest failure is answered.
    private static func delay(after failures: Int) -> Duration {
        guard failures > 0 else { return .zero }
        return min(Self.firstDelay * (1 << min(failures - 1, 5)), Self.longestDelay)
    }
}
