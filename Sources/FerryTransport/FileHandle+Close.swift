public import _NIOFileSystem

extension FileHandleProtocol where Self: Sendable {
    /// Closes the handle even when the calling task has been cancelled.
    ///
    /// `_NIOFileSystem` traps when a handle is released while still open, and closing is itself an async call that
    /// a cancelled task may not complete. Cancellation is exactly when the clean-up paths run (a grace period that
    /// ran out, a client that vanished), so the close runs in a task of its own, which cancellation does not reach.
    public func closeRegardlessOfCancellation() async throws {
        try await Task { try await self.close() }.value
    }
}
