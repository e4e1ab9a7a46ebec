import FerryProtocol
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
        /// The downloads to be kept rather than removed, with what has been written of them so far.
        var kept: [String: (record: KeptPartial, at: String)] = [:]
        var stopping = false
    }

    /// Opens (creating, or emptying unless `resuming`) the partial file of a resumable download at `path` and
    /// registers it to be kept, not removed, when the process is stopped: ``removeAll()`` then writes `record`, as
    /// ``advance(_:by:crc32:)`` has brought it up to date, to `recordPath`. Blocking. Returns 0 or the `errno`.
    static func openKept(_ path: String, resuming: Bool, record: KeptPartial, at recordPath: String) -> Int32 {
        Self.state.withLock { state in
            guard !state.stopping else { return ECANCELED }
            let flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (resuming ? 0 : O_TRUNC)
            let descriptor = open(path, flags, 0o644)
            guard descriptor >= 0 else { return errno }
            close(descriptor)
            state.paths.insert(path)
            state.kept[path] = (record, recordPath)
            return 0
        }
    }

    /// Counts `length` more bytes, whose CRC-32 is `crc32`, as written to the kept download at `path`.
    static func advance(_ path: String, by length: UInt64, crc32: UInt32) {
        Self.state.withLock { state in
            guard var entry = state.kept[path] else { return }
            entry.record.crc32 = CRC32.combine(entry.record.crc32, crc32, secondLength: length)
            entry.record.kept += length
            state.kept[path] = entry
        }
    }

    /// What has been written of the kept download at `path`, and where its record goes.
    static func keptRecord(_ path: String) -> (record: KeptPartial, at: String)? {
        Self.state.withLock { $0.kept[path] }
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
        Self.state.withLock { state in
            state.paths.remove(path)
            state.kept[path] = nil
        }
    }

    static func remove(_ paths: [String]) {
        Self.state.withLock { $0.paths.subtract(paths) }
    }

    /// Refuses every further creation and unlinks every temporary file of a download in progress (a file already
    /// published is not among them). For a signal's handler, which then ends the process.
    ///
    /// A resumable download that has bytes written is kept instead: its record is written, so that the next `get`
    /// resumes it (``KeptPartial``).
    public static func removeAll() {
        Self.state.withLock { state in
            state.stopping = true
            for path in state.paths {
                if let kept = state.kept[path], kept.record.kept > 0, kept.record.write(to: kept.at) {
                    continue
                }
                unlink(path)
            }
            state.paths.removeAll()
            state.kept.removeAll()
        }
    }
}
