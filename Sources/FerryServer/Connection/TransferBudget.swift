import FerryTransport
import Synchronization

/// How much file data the server's downloads hold in memory, all connections together, and the chunk size each
/// download gets from it.
///
/// A download read from a file holds one chunk at a time (see ``MessageWriter/sendFile(_:from:to:on:reserve:release:sentChunk:)``),
/// for as long as its peer takes to accept it: a peer that never reads holds its chunk for good. Large chunks are
/// given while the budget lasts; past it every download still gets the crowded size, so each one keeps moving and
/// a crowd of stalled peers costs the server `crowdedDataChunkLength` each rather than a bulk chunk each. (With a
/// count of transfers instead, the first 64 downloads kept their 1 MiB chunks whoever came after.)
final class TransferBudget: Sendable {
    private let held = Atomic<Int>(0)
    /// Bytes of chunks beyond which downloads get only the crowded size.
    let limit: Int

    init(limit: Int = TransferBudget.defaultLimit) {
        self.limit = limit
    }

    /// 32 MiB: 32 bulk downloads at full chunk size, or 128 of the ordinary one.
    static let defaultLimit = 32 << 20

    /// The length to read next, for a download that would like `preferred` bytes: `preferred` if the budget has
    /// room, the crowded size otherwise (or `preferred`, if smaller). Pair with ``release(_:)``.
    func reserve(preferred: Int) -> Int {
        let floor = min(preferred, MessageWriter.crowdedDataChunkLength)
        var current = self.held.load(ordering: .relaxed)
        while true {
            let length = current + preferred <= self.limit ? preferred : floor
            let (exchanged, original) = self.held.compareExchange(
                expected: current,
                desired: current + length,
                ordering: .relaxed
            )
            if exchanged { return length }
            current = original
        }
    }

    func release(_ length: Int) {
        self.held.subtract(length, ordering: .relaxed)
    }

    /// What the downloads hold now.
    var heldBytes: Int {
        self.held.load(ordering: .relaxed)
    }
}
