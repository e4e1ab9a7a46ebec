import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The temporary files of the downloads in progress in this process. They are hidden and sit beside their targets,
/// where nothing else would ever remove them, so a program stopped by a signal removes them with ``removeAll()``.
///
/// A file is registered before it is created, and none is created once ``removeAll()`` has begun: after it, no
/// temporary file of this process can appear (a handler that removed the files and then exited while downloads were
/// still creating theirs left 7 of 24 interrupted downloads' files behind on a loaded machine).
public enum PartialDownloads {
    private static let state = Mutex(State())
    private static let stopping = Atomic<Bool>(false)

    private struct State {
        var paths: Set<String> = []
    }

    /// Registers `path` before its file is created; `false` once the process is stopping: then it must not be.
    static func add(_ path: String) -> Bool {
        Self.add([path])
    }

    static func add(_ paths: [String]) -> Bool {
        Self.state.withLock { state in
            guard !Self.stopping.load(ordering: .relaxed) else { return false }
            state.paths.formUnion(paths)
            return true
        }
    }

    /// Whether a registered file may still be created: asked just before each creation.
    static var mayCreate: Bool {
        !Self.stopping.load(ordering: .relaxed)
    }

    static func remove(_ path: String) {
        Self.state.withLock { _ = $0.paths.remove(path) }
    }

    static func remove(_ paths: [String]) {
        Self.state.withLock { $0.paths.subtract(paths) }
    }

    /// Stops every further creation and unlinks every temporary file of a download in progress (a file already
    /// published is not among them), twice: at once, and once more after `settle`, for files whose creation had
    /// passed its check when this began. For a signal's handler, which then ends the process.
    public static func removeAll(settle: Duration = .milliseconds(100)) {
        Self.stopping.store(true, ordering: .relaxed)
        Self.unlinkRegistered()
        if settle > .zero {
            let (seconds, attoseconds) = settle.components
            var time = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
            var left = timespec()
            while nanosleep(&time, &left) != 0, errno == EINTR {
                time = left
            }
            Self.unlinkRegistered()
        }
    }

    private static func unlinkRegistered() {
        Self.state.withLock { state in
            for path in state.paths {
                unlink(path)
            }
        }
    }
}
