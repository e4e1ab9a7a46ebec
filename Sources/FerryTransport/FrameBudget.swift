import Synchronization

/// How much memory partly received frames may hold, all of a server's connections together.
///
/// A frame is verified only once it is whole, so its bytes are held until its last one arrives: a peer that sends
/// most of a 1 MiB frame and then one byte a second holds a megabyte for as long as it likes. A thousand such
/// connections took a server from 25 MiB to nearly 2 GiB. Here a frame whose payload is over ``freeLength`` is
/// received only once its length is reserved from the budget; while the budget is spent, connections with such a
/// frame wait, reading nothing more from their sockets (TCP holds their peers back), and get it in turn as frames
/// complete. A frame that holds part of the budget must also arrive within a deadline (see ``InputWait``), so that
/// peers that never finish their frames cannot keep it.
///
/// Frames up to ``freeLength`` (requests, HELLO) need no reservation: at most ``freeLength`` per connection.
public final class FrameBudget: Sendable {
    private let state: Mutex<State>
    public let limit: Int

    /// Payloads up to this length are received without a reservation.
    public static let freeLength = 16 * 1024

    private struct Waiter {
        var id: UInt64
        var bytes: Int
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var available: Int
        var waiters: [Waiter] = []
        /// Waits cancelled before they were queued.
        var cancelled: Set<UInt64> = []
        var nextID: UInt64 = 0
    }

    public init(limit: Int) {
        self.limit = max(limit, 1)
        self.state = Mutex(State(available: max(limit, 1)))
    }

    /// Bytes not reserved now.
    public var available: Int {
        self.state.withLock { $0.available }
    }

    /// Reserves `bytes` (at most the whole budget), waiting in line until they are free. Cancellable.
    public func reserve(_ bytes: Int) async throws -> Reservation {
        let bytes = min(max(bytes, 0), self.limit)
        let id = self.state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted: Bool? = self.state.withLock { state in
                    if state.cancelled.remove(id) != nil { return nil }
                    if state.waiters.isEmpty, state.available >= bytes {
                        state.available -= bytes
                        return true
                    }
                    state.waiters.append(Waiter(id: id, bytes: bytes, continuation: continuation))
                    return false
                }
                switch granted {
                case true?: continuation.resume()
                case false?: break
                case nil: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let waiter: Waiter? = self.state.withLock { state in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                    // Not queued yet (or granted already): the wait sees this when it starts, or clears it below.
                    state.cancelled.insert(id)
                    return nil
                }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
            // The waiters behind a cancelled one may fit now.
            self.release(0)
        }
        self.state.withLock { _ = $0.cancelled.remove(id) }
        return Reservation(bytes: bytes, budget: self)
    }

    fileprivate func release(_ bytes: Int) {
        let ready: [Waiter] = self.state.withLock { state in
            state.available += bytes
            var ready: [Waiter] = []
            while let first = state.waiters.first, first.bytes <= state.available {
                state.available -= first.bytes
                ready.append(state.waiters.removeFirst())
            }
            return ready
        }
        for waiter in ready {
            waiter.continuation.resume()
        }
    }

    /// Bytes reserved for one frame, given back when this is released (or dropped, however the connection ends).
    public final class Reservation: Sendable {
        public let bytes: Int
        private let budget: FrameBudget

        fileprivate init(bytes: Int, budget: FrameBudget) {
            self.bytes = bytes
            self.budget = budget
        }

        deinit {
            self.budget.release(self.bytes)
        }
    }
}
