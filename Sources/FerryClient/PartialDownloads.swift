import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The temporary files of the downloads in progress in this process. They are hidden and sit beside their targets,
/// where nothing else would ever remove them, so a program stopped by a signal removes them with ``removeAll()``.
public enum PartialDownloads {
    private static let paths = Mutex<Set<String>>([])

    static func add(_ path: String) {
        Self.paths.withLock { _ = $0.insert(path) }
    }

    static func add(_ paths: [String]) {
        Self.paths.withLock { $0.formUnion(paths) }
    }

    static func remove(_ path: String) {
        Self.paths.withLock { _ = $0.remove(path) }
    }

    static func remove(_ paths: [String]) {
        Self.paths.withLock { $0.subtract(paths) }
    }

    /// Unlinks every temporary file of a download in progress (a file already published is not among them). For a
    /// signal's handler: it takes a lock and calls `unlink`, nothing else.
    public static func removeAll() {
        Self.paths.withLock { paths in
            for path in paths {
                unlink(path)
            }
            paths.removeAll()
        }
    }
}
