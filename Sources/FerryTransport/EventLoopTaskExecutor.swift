public import NIOCore

/// Runs a task's jobs on one NIO event loop: given as a task executor preference
/// (`withTaskExecutorPreference`), it keeps a connection's task on the thread that reads its socket.
///
/// A task on Swift's global executor is woken on another thread for every read its channel hands on, and a
/// download's bytes then cross cores between the read and their checksum. On the channel's own loop, the read, the
/// parse and the CRC of each frame happen one after the other on one thread, while the data is still in that core's
/// cache; only file writes leave it, for the I/O thread pool. `ferry get` of 1 GiB over loopback to tmpfs (medians
/// of eight interleaved rounds): 0.59 to 0.56 s, client CPU 0.76 to 0.74 s; with the client's write-behind as well,
/// 0.58 to 0.52 s. `ferry put` of 1 GiB: 0.67 to 0.61 s. (ferryd's sessions on their loops made its uploads no faster:
/// 0.63 against 0.65 s; a server's loop also serves other connections, so they stay on the global executor.)
///
/// The loop is shared with the connection's own I/O, so the task must not block: file I/O belongs on the thread
/// pool, as it does anyway. Jobs enqueued after the loop has shut down are not run, so the loop must outlive every
/// task that prefers it (`MultiThreadedEventLoopGroup.singleton`'s always do).
public final class EventLoopTaskExecutor: TaskExecutor, Sendable {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
