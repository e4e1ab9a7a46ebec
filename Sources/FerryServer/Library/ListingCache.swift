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
        /// The listing as LIST_ENTRIES frames and LIST_END, for clients whose frame limit gives the same batches.
        /// Only the encoding is kept: re-encoding 10,000 entries (and their CRCs) was most of what an unchanged LIST
        /// cost the server, and the entries themselves took three times the memory (about 1.4 MiB for 10,000
        /// names, against 0.4 MiB encoded).
        var listing: Listing?
        /// Counts the batches of changes seen: a listing made across a change is not kept.
        var generation: UInt64 = 0
    }

    /// A listing ready to send.
    struct Listing: Sendable {
        /// The LIST_ENTRIES frames, each with at most `batchBudget` bytes of entries, then LIST_END.
        var frames: ByteBuffer
        var batchBudget: Int
        var count: Int
    }

    /// Listings whose encoding is longer than this are not kept (10,000 entries take about 400 KB).
    static let maximumEncodedLength = 8 << 20

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

    /// The cached listing, if nothing changed since it was made and it was encoded for `batchBudget`. A client with
    /// another frame limit gets a listing made afresh, which then replaces this one.
    func listing(batchBudget: Int) -> Listing? {
        guard self.events >= 0 else { return nil }
        return self.withChangesTakenIn { state in
            state.listing.flatMap { $0.batchBudget == batchBudget ? $0 : nil }
        }
    }

    /// Where the folder stands now; pass it to ``keep(_:madeAt:)`` with a listing made from here on.
    func generation() -> UInt64 {
        self.withChangesTakenIn { $0.generation }
    }

    /// Runs `body` on the state after taking in the changes queued so far, all under the lock: an event read by one
    /// thread has made the cache stale before any other can look at it.
    private func withChangesTakenIn<Result: Sendable>(_ body: (inout State) -> Result) -> Result {
        self.state.withLock { state in
            if self.drainEvents() {
                state.listing = nil
                state.generation &+= 1
            }
            return body(&state)
        }
    }

    /// Keeps `listing` if nothing changed since `generation` was taken, in storage of its own exact size.
    func keep(_ listing: Listing, madeAt generation: UInt64) {
        guard self.events >= 0, listing.frames.readableBytes <= Self.maximumEncodedLength else { return }
        var compact = listing
        compact.frames = ByteBufferAllocator().buffer(capacity: listing.frames.readableBytes)
        compact.frames.writeImmutableBuffer(listing.frames)
        // Compared and stored under one lock: a change taken in by another thread in between cannot be missed.
        self.withChangesTakenIn { state in
            if state.generation == generation {
                state.listing = compact
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
