import NIOPosix

/// Runs a short blocking system call (link, rename, unlink) off the caller's thread, on NIO's I/O pool.
enum NIOThreadPoolRunner {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
