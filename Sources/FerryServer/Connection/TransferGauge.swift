import Synchronization

/// How many files the server is sending at once, so that each transfer can size its chunks: the more transfers
/// share the server, the smaller each one's buffers (see ``MessageWriter/dataChunkLength(forTransferOf:alongside:)``).
final class TransferGauge: Sendable {
    private let active = Atomic<Int>(0)

    /// Counts a transfer in; returns how many are running, this one included. Pair with ``end()``.
    func begin() -> Int {
        self.active.add(1, ordering: .relaxed).newValue
    }

    func end() {
        self.active.subtract(1, ordering: .relaxed)
    }
}
