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
    /// Each server's area is named this, its process ID and a random number.
    static let areaPrefix = "ferryd-"

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
        while true {
            let name = "\(Self.areaPrefix)\(getpid())-\(String(random.next(), radix: 16))"
            guard mkdirat(shared.descriptor, name, 0o700) == 0 else {
                if errno == EEXIST { continue }
                throw PinningError(errno: errno, path: "\(Self.sharedFolderName)/\(name)")
            }
            let area = try shared.openFolder(name, creatingWith: nil)
            // Another server starting now may have taken the new, still unlocked area for an abandoned one and
            // removed it before it was locked: then make another.
            guard flock(area.descriptor, LOCK_EX | LOCK_NB) == 0, !area.isRemoved else { continue }
            return area
        }
    }

    /// Removes the areas no running server holds, and staging files older versions left directly in `shared`.
    /// Blocking.
    private static func removeAbandonedAreas(in shared: PinnedFolder) {
        let prefix = Array(Self.filePrefix.utf8)
        try? FileLibrary.forEachEntry(in: shared.path) { descriptor, name, type in
            let text = String(decoding: name, as: UTF8.self)
            guard name.first != UInt8(ascii: "."), type == DT_DIR || type == DT_UNKNOWN else {
                if name.starts(with: prefix) {
                    _ = unlinkat(descriptor, text, 0)
                }
                return
            }
            guard let area = try? shared.openFolder(text, creatingWith: nil) else { return }
            // Held by a running server (this call does not wait): leave it.
            guard flock(area.descriptor, LOCK_EX | LOCK_NB) == 0 else { return }
            try? FileLibrary.forEachEntry(in: area.path) { areaDescriptor, entry, _ in
                _ = String(decoding: entry, as: UTF8.self).withCString { unlinkat(areaDescriptor, $0, 0) }
            }
            _ = unlinkat(descriptor, text, AT_REMOVEDIR)
        }
    }
}
