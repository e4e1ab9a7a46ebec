extension ThrowingTaskGroup {
    /// Waits until no child task is left, whatever they throw: for failure paths that are about to release what
    /// the tasks use (the file a write-behind task writes to). `waitForAll()` stops at the first error.
    public mutating func drain() async {
        while !self.isEmpty {
            _ = try? await self.next()
        }
    }
}
