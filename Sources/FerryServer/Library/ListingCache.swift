import FerryProtocol
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The last complete listing of the library, reused for as long as nothing in the folder has changed.
///
/// A listing costs a `stat` per file (about 15 ms for 10,000 files); most LISTs follow no change at all. Linux's
/// inotify tells what changed: every create, delete, rename, write or attribute change in the folder queues an event
/// before the system call that caused it returns. So before a cached listing is used the queue is drained, without
/// waiting; any event at all makes the cache stale. A listing is kept only if no event arrived while it was being
/// made. (Writes through a shared memory mapping raise no event; they cannot change a file's size, only its time.)
/// Elsewhere, or when inotify is unavailable, nothing is cached and every LIST reads the folder.
final class ListingCache: Sendable {
    private let events: Int32
    private let state = Mutex(State())

    private struct State {
        var entries: [ListEntry]?
        /// `entries` as LIST_ENTRIES frames and LIST_END, for clients whose frame limit gives the same batches:
        /// re-encoding 10,000 entries (and their CRCs) was most of what an unchanged LIST cost the server.
        var encoded: (batchBudget: Int, frames: ByteBuffer)?
        /// Counts the batches of changes seen: a listing made across a change is not kept.
        var generation: UInt64 = 0
    }

    /// Listings longer than this are not kept (10,000 entries take about 600 KB).
    static let maximumEntries = 100_000

    init(watching root: String) {
        #if canImport(Glibc)
        let events = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        let mask =
            IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
            | IN_DELETE_SELF | IN_MOVE_SELF
        if events >= 0, inotify_add_watch(events, root, UInt32(mask)) < 0 {
            close(events)
            self.events = -1
        } else {
            self.events = events
        }
        #else
        self.events = -1
        #endif
    }

    deinit {
        if self.events >= 0 {
            close(self.events)
        }
    }

    /// The cached listing, encoded for `batchBudget` if it was already, if nothing changed since it was made; with
    /// the generation to pass to ``keepEncoded(_:batchBudget:madeAt:)``.
    func listing(batchBudget: Int) -> (entries: [ListEntry], encoded: ByteBuffer?, generation: UInt64)? {
        guard self.events >= 0 else { return nil }
        let state = self.refreshed()
        guard let entries = state.entries else { return nil }
        let encoded = state.encoded.flatMap { $0.batchBudget == batchBudget ? $0.frames : nil }
        return (entries, encoded, state.generation)
    }

    /// Keeps the encoding of the cached listing if nothing changed since `generation` was taken.
    func keepEncoded(_ frames: ByteBuffer, batchBudget: Int, madeAt generation: UInt64) {
        let current = self.generation()
        self.state.withLock { state in
            if current == generation, state.entries != nil {
                state.encoded = (batchBudget, frames)
            }
        }
    }

    /// Where the folder stands now; pass it to ``keep(_:madeAt:)`` with a listing made from here on.
    func generation() -> UInt64 {
        self.refreshed().generation
    }

    /// The state after taking in the changes queued so far.
    private func refreshed() -> State {
        let changed = self.drainEvents()
        return self.state.withLock { state in
            if changed {
                state.entries = nil
                state.encoded = nil
                state.generation &+= 1
            }
            return state
        }
    }

    /// Keeps `entries` if nothing changed since `generation` was taken.
    func keep(_ entries: [ListEntry], madeAt generation: UInt64) {
        guard self.events >= 0, entries.count <= Self.maximumEntries else { return }
        let current = self.generation()
        self.state.withLock { state in
            if current == generation {
                state.entries = entries
                state.encoded = nil
            }
        }
    }

    /// Reads every queued event without waiting; `true` if there was any (or the queue overflowed, which is
    /// itself an event).
    private func drainEvents() -> Bool {
        var changed = false
        withUnsafeTemporaryAllocation(byteCount: 4096, alignment: 8) { buffer in
            while read(self.events, buffer.baseAddress, buffer.count) > 0 {
                changed = true
            }
        }
        return changed
    }
}
