import FerryTransport
import NIOConcurrencyHelpers
import NIOCore

/// Lets graceful shutdown reach a connection: one waiting for a request is interrupted at once; one in the
/// middle of a request finishes it first and is told afterwards.
final class ConnectionQuiescer: Sendable {
    private struct State {
        var busy = false
        var stopping = false
    }

    private let state = NIOLockedValueBox(State())
    private let channel: any Channel

    init(channel: any Channel) {
        self.channel = channel
    }

    func beginRequest() {
        self.state.withLockedValue { $0.busy = true }
    }

    /// Marks the request done; `true` if the server is stopping and the connection should now close.
    func endRequest() -> Bool {
        self.state.withLockedValue { state in
            state.busy = false
            return state.stopping
        }
    }

    func requestShutdown() {
        let interruptNow = self.state.withLockedValue { state in
            state.stopping = true
            return !state.busy
        }
        if interruptNow {
            self.channel.pipeline.fireErrorCaught(ConnectionInterruption.shuttingDown)
        }
    }
}
