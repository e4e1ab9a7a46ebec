import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The temporary files of the downloads in progress in this process. They are hidden and sit beside their targets,
/// where nothing else would ever remove them, so a program stopped by a signal removes them with ``removeAll()``.
///
/// Every such file is created under this registry's lock (``create(_:)``, ``gate(_:)``), and ``removeAll()`` takes
/// the same lock and refuses every creation after it: no temporary file of this process can appear once the clean-up
/// has begun, nor be half created while it runs. (A handler that removed the files and then exited while downloads
/// were still creating theirs left 7 of 24 interrupted downloads' files behind on a loaded machine.)
public enum PartialDownloads {
    private static let state = Mutex(State())

    private struct State {
        var paths: Set<String> = []
        var stopping = false
    }

    /// Creates the empty file at `path` (never following a link, never replacing a file) and registers it, both
    /// under the lock. Blocking. Returns 0, or the `errno` (`ECANCELED` once the process is stopping).
    static func create(_ path: String) -> Int32 {
        Self.state.withLock { state in
            guard !state.stopping else { return ECANCELED }
            let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { return errno }
            close(descriptor)
            state.paths.insert(path)
            return 0
        }
    }

    /// Registers `paths`, whose files ``gate(_:)`` will create; `false` once the process is stopping.
    static func register(_ paths: [String]) -> Bool {
        Self.state.withLock { state in
            guard !state.stopping else { return false }
            state.paths.formUnion(paths)
            return true
        }
    }

    /// Runs the creation of a registered file under the lock, or refuses it (-1, `errno` `ECANCELED`) once the
    /// process is stopping. For ``BlockingFileIO/publishGroup(_:gate:)``.
    static func gate(_ create: () -> Int32) -> Int32 {
        Self.state.withLock { state in
            guard !state.stopping else {
                errno = ECANCELED
                return -1
            }
            return create()
        }
    }

    static func remove(_ path: String) {
        Self.state.withLock { _ = $0.paths.remove(path) }
    }

    static func remove(_ paths: [String]) {
        Self.state.withLock { $0.paths.subtract(paths) }
    }

    /// Refuses every further creation and unlinks every temporary file of a download in progress (a file already
    /// published is not among them). For a signal's handler, which then ends the process.
    public static func removeAll() {
        Self.state.withLock { state in
            state.stopping = true
            for path in state.paths {
                unlink(path)
            }
            state.paths.removeAll()
        }
    }
}
