public import NIOCore
import Synchronization

/// When a connection's reader waits for the peer's next bytes: shared by the connection's ``MessageReader`` (which
/// marks the start and end of each wait) and its ``IdleTimeoutHandler`` (which reads it on the event loop).
///
/// Without it the handler knows only that NIO has a read outstanding, which is nearly always true: a session busy
/// with a request it had read (committing a file, or not yet scheduled on a loaded machine) looked exactly like a
/// peer that sent nothing, and closed connections whose peer was waiting for the server.
public final class InputWait: Sendable {
    /// Counts starts and ends of waits: odd while the reader waits. Each wait has its own value, so the handler can
    /// tell whether bytes arrived during the current one.
    private let state = Atomic<UInt64>(0)
    /// When the latest wait began (`NIODeadline`'s uptime nanoseconds): the peer owes nothing before that.
    private let started = Atomic<UInt64>(0)
    /// When the frame holding part of a ``FrameBudget`` began to be received (uptime nanoseconds), or 0.
    private let frameStart = Atomic<UInt64>(0)

    public init() {}

    /// The current state, to compare with an earlier one; see ``isWaiting(_:)``.
    public var current: UInt64 {
        self.state.load(ordering: .relaxed)
    }

    /// Whether the reader was waiting for the peer in `state`.
    public static func isWaiting(_ state: UInt64) -> Bool {
        state & 1 == 1
    }

    /// When the latest wait began.
    public var latestStart: NIODeadline {
        .uptimeNanoseconds(self.started.load(ordering: .relaxed))
    }

    /// When the frame in progress that holds part of the frame budget began, if there is one: it must be whole
    /// within the idle timeout, however steadily its bytes come.
    public var budgetedFrameStart: NIODeadline? {
        let start = self.frameStart.load(ordering: .relaxed)
        return start == 0 ? nil : .uptimeNanoseconds(start)
    }

    func frameStarted() {
        self.frameStart.store(max(NIODeadline.now().uptimeNanoseconds, 1), ordering: .relaxed)
    }

    func frameEnded() {
        self.frameStart.store(0, ordering: .relaxed)
    }

    func begin() {
        self.started.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        self.state.add(1, ordering: .relaxed)
    }

    func end() {
        self.state.add(1, ordering: .relaxed)
    }
}
