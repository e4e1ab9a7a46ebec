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
///
/// inotify sees only the changes made through this machine's kernel. Another server sharing the library over a
/// network or distributed file system changes it unseen, so a cached listing is also checked against the folder
/// itself (its modification and change times, which every name created, removed or renamed in it moves, on any
/// machine), and is used for at most ``maximumAge`` (which catches what the folder's times cannot: a file rewritten
/// in place elsewhere, or two changes within one tick of a coarse clock).
final class ListingCache: Sendable {
    private let events: Int32
    private let folder: PinnedFolder
    private let state = Mutex(State())

    private struct State {
        /// The listing as LIST_ENTRIES frames and LIST_END, for clients whose frame limit gives the same batches.
        /// Only the encoding is kept: re-encoding 10,000 entries (and their CRCs) was most of what an unchanged LIST
        /// cost the server, and the entries themselves took three times the memory (about 1.4 MiB for 10,000
        /// names, against 0.4 MiB encoded).
        var listing: Listing?
        /// Counts the batches of changes seen: a listing made across a change is not kept.
        var generation: UInt64 = 0
        /// The folder's times when the listing was made, and when it was made.
        var folderTimes: FolderTimes?
        var made: ContinuousClock.Instant?
    }

    /// The longest a listing is used: how long a change another server makes to a file in place may go unseen.
    static let maximumAge = Duration.seconds(1)

    /// A listing ready to send.
    struct Listing: Sendable {
        /// The LIST_ENTRIES frames, each with at most `batchBudget` bytes of entries, then LIST_END.
        var frames: ByteBuffer
        var batchBudget: Int
        var count: Int
    }

    /// Listings whose encoding is longer than this are not kept (10,000 entries take about 400 KB).
    static let maximumEncodedLength = 8 << 20

    init(watching folder: PinnedFolder) {
        self.folder = folder
        #if canImport(Glibc)
        let events = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        // Not IN_MOVE_SELF: the folder is served through its descriptor wherever it is moved.
        let mask =
            IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
            | IN_DELETE_SELF
        // The watch is on the folder the descriptor holds (the kernel resolves /proc/self/fd/N to it).
        if events >= 0, inotify_add_watch(events, folder.path, UInt32(mask)) < 0 {
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
    func generation() -> Generation {
        let times = FolderTimes(self.folder)
        let started = ContinuousClock.now
        return self.withChangesTakenIn { Generation(count: $0.generation, folderTimes: times, started: started) }
    }

    /// When a listing began to be made: the changes seen so far, the folder's times and the clock.
    struct Generation: Sendable {
        fileprivate var count: UInt64
        fileprivate var folderTimes: FolderTimes?
        fileprivate var started: ContinuousClock.Instant
    }

    /// Runs `body` on the state after taking in the changes queued so far, all under the lock: an event read by one
    /// thread has made the cache stale before any other can look at it.
    private func withChangesTakenIn<Result: Sendable>(_ body: (inout State) -> Result) -> Result {
        self.state.withLock { state in
            let expired = state.made.map { ContinuousClock.now - $0 > Self.maximumAge } ?? false
            if self.drainEvents() || expired || (state.folderTimes.map { $0 != FolderTimes(self.folder) } ?? false) {
                state.listing = nil
                state.folderTimes = nil
                state.made = nil
                state.generation &+= 1
            }
            return body(&state)
        }
    }

    /// Keeps `listing` if nothing changed since `generation` was taken, in storage of its own exact size.
    func keep(_ listing: Listing, madeAt generation: Generation) {
        guard self.events >= 0, listing.frames.readableBytes <= Self.maximumEncodedLength else { return }
        var compact = listing
        compact.frames = ByteBufferAllocator().buffer(capacity: listing.frames.readableBytes)
        compact.frames.writeImmutableBuffer(listing.frames)
        // Compared and stored under one lock: a change taken in by another thread in between cannot be missed.
        self.withChangesTakenIn { state in
            if state.generation == generation.count, let times = generation.folderTimes {
                state.listing = compact
                state.folderTimes = times
                state.made = generation.started
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

/// What the folder's own times say about its names: any name created, removed or renamed in it, by any machine,
/// moves them.
private struct FolderTimes: Hashable, Sendable {
    var modified: timespec
    var changed: timespec

    /// The folder's times now, or `nil` if they cannot be read.
    init?(_ folder: PinnedFolder) {
        var info = stat()
        guard fstat(folder.descriptor, &info) == 0 else { return nil }
        self.modified = info.st_mtim
        self.changed = info.st_ctim
    }

    static func == (first: Self, second: Self) -> Bool {
        first.modified.tv_sec == second.modified.tv_sec && first.modified.tv_nsec == second.modified.tv_nsec
            && first.changed.tv_sec == second.changed.tv_sec && first.changed.tv_nsec == second.changed.tv_nsec
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(self.modified.tv_sec)
        hasher.combine(self.modified.tv_nsec)
        hasher.combine(self.changed.tv_sec)
        hasher.combine(self.changed.tv_nsec)
    }
}
