import CMallocTuning
import FerryProtocol

/// How the process's allocator treats transfer buffers; called once at start-up by each executable.
public enum TransferMemory {
    /// Keeps transfer buffers (256 KiB to 1 MiB, each allocated for one frame or one read) in the heap.
    ///
    /// By default glibc maps buffers this large afresh and unmaps them when freed, so every frame costs page
    /// faults and the kernel zeroes every page: measured here, `clear_page` took 7 % of both processes' CPU in a
    /// 1 GiB upload. Served from the heap instead, and with a few MiB of freed memory kept for the next buffer,
    /// the server used 10–20 % less CPU per upload (ticks A/B, four runs each) with the same peak memory.
    ///
    /// - Parameter arenas: the number of malloc arenas, if limited. glibc gives threads arenas of their own, up to
    ///   eight per core, and transfer buffers are allocated on the event loop, the thread pool and the tasks'
    ///   threads and freed on others, so memory freed in one arena is not reused by the next allocation in
    ///   another: one arena halved the server's memory growth during a 1 GiB upload (about +20 to +11 MiB) and
    ///   lowered it with 200 clients at once (44 to 39 MiB), with transfer speeds unchanged within the noise.
    public static func tuneAllocator(arenas: Int? = nil) {
        if let arenas {
            _ = ferry_limit_malloc_arenas(Int32(arenas))
        }
        _ = ferry_keep_buffers_in_heap(Int32(Self.largestHeapBuffer), Int32(Self.retainedFreeMemory))
    }

    /// Gives the heap's free memory back to the system: ferryd calls it after each bulk transfer and whenever its
    /// last connection closes.
    ///
    /// Buffers kept in the heap (``tuneAllocator(arenas:)``) are reused within a transfer, but what transfers left
    /// free in the middle of the heap stays resident until trimmed: measured here, 200 simultaneous downloads after
    /// bulk, small-file and listing runs peaked at 47.9 MiB without trimming and 30.7 MiB with it.
    public static func releaseFreeMemory() {
        _ = ferry_release_free_memory()
    }

    /// Above the largest frame a receiver reassembles (1 MiB payload and its envelope, rounded up by the buffer).
    static let largestHeapBuffer = 4 * ProtocolLimits.defaultMaximumFramePayload
    /// A few frames' worth.
    static let retainedFreeMemory = 8 * ProtocolLimits.defaultMaximumFramePayload
}
