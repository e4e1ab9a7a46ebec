import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// This server's own folder for uploads in progress: `.ferry-staging/<instance>/`, locked with `flock` for as long
/// as the server runs.
///
/// Several servers may share one library (a network or distributed file system behind a load balancer, or an
/// overlapping restart by a supervisor). Each stages its uploads in an area of its own, and at start-up removes only
/// the areas whose lock is free, left by servers that are gone: a server starting beside a running one never removes
/// what the other is writing. (With one area for all, a second server's start-up deleted the first one's staging
/// file, and a complete 20 MiB upload was answered 107.)
///
/// The lock is taken on a file in the area (`.lock`, opened for writing: some network file systems lock only files
/// open for writing). Where locks cannot be taken at all, the server works without one and never removes an area
/// it cannot lock. Where they hold only within one machine (NFS mounted with `local_lock=flock`, say), an area is
/// named after its machine, and another machine's area is removed only once it is unlocked and nothing in it has
/// changed for ``abandonedAge``.
///
/// The area is made again if it is removed while the server runs. The folders it replaces are kept open, not
/// closed: paths built from their descriptors may still be in use, and a closed descriptor's number can be reused.
final class StagingArea: Sendable {
    /// The library folder, in which `.ferry-staging` lives.
    private let library: PinnedFolder
    private let state: Mutex<State>

    private struct State {
        /// `.ferry-staging`, the parent of every server's area.
        var shared: PinnedFolder?
        /// This server's area, locked.
        var own: PinnedFolder?
        /// Areas that were removed while the server ran, kept open (see the type's documentation).
        var retired: [PinnedFolder] = []
    }

    /// The folder all servers' areas live in. A dot-name: never listed or retrievable.
    static let sharedFolderName = ".ferry-staging"
    /// Staging files start with this; files with it directly in `.ferry-staging` or the library folder itself were
    /// left by versions before areas of their own, and are removed at start-up.
    static let filePrefix = ".ferry-staging-"
    /// Each server's area is named this, its machine's name, its process ID and a random number.
    static let areaPrefix = "ferryd-"
    /// The file in an area that its server holds locked.
    static let lockName = ".lock"
    /// How long another machine's unlocked area, or a staging file an older version left, must have been still
    /// before start-up removes it: it may belong to a server whose lock this machine cannot see.
    static let abandonedAge = 3600
    /// How many new areas one start tries before giving up (only a race with other servers makes it try again).
    private static let attempts = 16

    /// Opens `.ferry-staging` in `library` (making it if missing), removes the areas of servers that are gone, and
    /// makes this server's own. Blocking.
    ///
    /// - Throws: ``LibraryError/storage(_:)`` when a link or a file stands where `.ferry-staging` should be: the
    ///   server must not start. A library the server may not write is not an error here: uploads are refused, with
    ///   the reason (``folder()``).
    init(in library: PinnedFolder) throws(LibraryError) {
        self.library = library
        var state = State()
        do throws(PinningError) {
            let shared = try library.openFolder(Self.sharedFolderName, creatingWith: 0o700)
            Self.removeAbandonedAreas(in: shared)
            state.shared = shared
            state.own = try? Self.makeOwnArea(in: shared)
        } catch let error where error.errno == ELOOP || error.errno == ENOTDIR {
            throw LibraryError.storage("'\(Self.sharedFolderName)' is in the way: the staging folder must be a folder")
        } catch {
            // Left for folder(), which tries again and says why when an upload needs it.
        }
        self.state = Mutex(state)
    }

    /// This server's area, made again if it was removed (or could not be made before). Blocking: one `fstat` when
    /// all is well.
    func folder() throws(LibraryError) -> PinnedFolder {
        try self.state.withLock { (state: inout State) throws(LibraryError) -> PinnedFolder in
            if let own = state.own, !own.isRemoved {
                return own
            }
            do throws(PinningError) {
                if state.shared?.isRemoved ?? true {
                    if let shared = state.shared { state.retired.append(shared) }
                    state.shared = try self.library.openFolder(Self.sharedFolderName, creatingWith: 0o700)
                }
                guard let shared = state.shared else { throw PinningError(errno: ENOENT, path: Self.sharedFolderName) }
                let own = try Self.makeOwnArea(in: shared)
                if let old = state.own { state.retired.append(old) }
                state.own = own
                return own
            } catch {
                let hint = error.errno == EACCES || error.errno == EROFS ? " (may ferryd write to the library?)" : ""
                throw LibraryError.storage("cannot make the staging folder: \(error)\(hint)")
            }
        }
    }

    /// Makes a new area in `shared` and locks it. Blocking.
    private static func makeOwnArea(in shared: PinnedFolder) throws(PinningError) -> PinnedFolder {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<Self.attempts {
            let name = "\(Self.areaPrefix)\(Self.machine)-\(getpid())-\(String(random.next(), radix: 16))"
            guard mkdirat(shared.descriptor, name, 0o700) == 0 else {
                if errno == EEXIST { continue }
                throw PinningError(errno: errno, path: "\(Self.sharedFolderName)/\(name)")
            }
            let area = try shared.openFolder(name, creatingWith: nil)
            switch Self.lock(area) {
            case .locked, .unsupported:
                // Another server starting now may have taken the new, still unlocked area for an abandoned one and
                // removed it before it was locked: then make another.
                if !area.isRemoved { return area }
            case .held:
                continue
            }
        }
        throw PinningError(errno: EAGAIN, path: Self.sharedFolderName)
    }

    private enum LockOutcome {
        /// Locked by this server now: the area keeps the lock file's descriptor, which holds the lock, open.
        case locked
        /// Another server holds it.
        case held
        /// The file system takes no such lock.
        case unsupported
    }

    /// Locks `area`'s lock file, without waiting. Blocking.
    private static func lock(_ area: PinnedFolder) -> LockOutcome {
        let descriptor = openat(area.descriptor, Self.lockName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return .unsupported }
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
            area.keepOpen(descriptor)
            return .locked
        }
        let failure = errno
        close(descriptor)
        return failure == EWOULDBLOCK ? .held : .unsupported
    }

    /// This machine's name, as area names carry it (letters, digits, `.` and `-` only).
    private static let machine: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "host" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let safe = name.unicodeScalars.filter { scalar in
            scalar.isASCII
                && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "."
                    || scalar == "-")
        }
        return safe.isEmpty ? "host" : String(String.UnicodeScalarView(safe))
    }()

    /// Removes the areas no running server holds, and staging files older versions left directly in `shared`
    /// once they have been still for ``abandonedAge``. Blocking.
    private static func removeAbandonedAreas(in shared: PinnedFolder) {
        let prefix = Array(Self.filePrefix.utf8)
        let ownMachine = Array("\(Self.areaPrefix)\(Self.machine)-".utf8)
        try? FileLibrary.forEachEntry(in: shared.path) { descriptor, name, type in
            let text = String(decoding: name, as: UTF8.self)
            guard name.first != UInt8(ascii: "."), type == DT_DIR || type == DT_UNKNOWN else {
                if name.starts(with: prefix), Self.isStill(text, in: descriptor) {
                    _ = unlinkat(descriptor, text, 0)
                }
                return
            }
            guard let area = try? shared.openFolder(text, creatingWith: nil) else { return }
            // Looked at before locking, which may create the lock file (and so touch the folder).
            let folderStill = Self.isStill(text, in: descriptor)
            // Held by a running server, or no lock to tell: leave it.
            guard case .locked = Self.lock(area) else { return }
            var entries: [String] = []
            try? FileLibrary.forEachEntry(in: area.path) { _, entry, _ in
                let entry = String(decoding: entry, as: UTF8.self)
                if entry != ".", entry != ".." { entries.append(entry) }
            }
            // Another machine's lock may be invisible here: its area goes only once nothing in it has moved.
            if !name.starts(with: ownMachine) {
                guard folderStill,
                    entries.allSatisfy({ $0 == Self.lockName || Self.isStill($0, in: area.descriptor) })
                else { return }
            }
            for entry in entries where entry != Self.lockName {
                _ = unlinkat(area.descriptor, entry, 0)
            }
            _ = unlinkat(area.descriptor, Self.lockName, 0)
            _ = unlinkat(descriptor, text, AT_REMOVEDIR)
        }
    }

    /// Whether `name` in the folder has not been modified for ``abandonedAge``. Blocking.
    static func isStill(_ name: String, in folder: Int32) -> Bool {
        var info = stat()
        guard fstatat(folder, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { return false }
        return Int(time(nil)) - Int(info.st_mtim.tv_sec) > Self.abandonedAge
    }
}
