import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A folder opened once and reached through its descriptor from then on, never through its name again.
///
/// A name can be turned into a link or replaced by another folder at any time (`mv lib lib.old; ln -s /etc lib`,
/// or a link planted where a hidden folder of the server's should be); a descriptor keeps naming the folder that was
/// opened. Everything the library does goes through these: the `*at()` system calls take the ``descriptor``, and
/// the APIs that take a path (NIO's file system, `rename`) get ``path(of:)``, a name under `/proc/self/fd/N`, which
/// the kernel resolves to the opened folder itself, not to whatever its old name leads to now. Final components
/// are still opened with `O_NOFOLLOW` wherever a link could stand.
///
/// The descriptor is closed when the last reference goes away.
final class PinnedFolder: Sendable {
    let descriptor: Int32
    /// `/proc/self/fd/N`: the folder itself, for APIs that take paths.
    let path: String
    /// Descriptors that live as long as this folder is open (a lock file's, which holds its lock).
    private let companions = Mutex<[Int32]>([])

    /// Takes ownership of `descriptor`, an open folder.
    private init(descriptor: Int32) {
        self.descriptor = descriptor
        self.path = "/proc/self/fd/\(descriptor)"
    }

    deinit {
        for companion in self.companions.withLock({ $0 }) {
            close(companion)
        }
        close(self.descriptor)
    }

    /// Keeps `descriptor` open until this folder is closed, then closes it.
    func keepOpen(_ descriptor: Int32) {
        self.companions.withLock { $0.append(descriptor) }
    }

    /// `name` in this folder, as a path for APIs that take one.
    func path(of name: String) -> String {
        self.path + "/" + name
    }

    /// Opens the folder at `path`, following links on the way: the operator named it. Blocking.
    static func open(_ path: String) throws(PinningError) -> PinnedFolder {
        let descriptor = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw PinningError(errno: errno, path: path)
        }
        let folder = PinnedFolder(descriptor: descriptor)
        // Paths through the descriptor need Linux's /proc; without it nothing would be found, so say so now.
        var info = stat()
        guard stat(folder.path, &info) == 0 else {
            throw PinningError(errno: errno, path: folder.path)
        }
        return folder
    }

    /// Opens `name` in this folder as a folder, creating it with `mode` if it is missing. A link or anything but a
    /// folder under that name is refused (`ELOOP` or `ENOTDIR`), never followed. Blocking.
    func openFolder(_ name: String, creatingWith mode: mode_t?) throws(PinningError) -> PinnedFolder {
        if let mode, mkdirat(self.descriptor, name, mode) != 0, errno != EEXIST {
            throw PinningError(errno: errno, path: name)
        }
        let descriptor = openat(self.descriptor, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw PinningError(errno: errno, path: name)
        }
        return PinnedFolder(descriptor: descriptor)
    }

    /// Whether the folder has been removed (it has no name left), so nothing can be created in it.
    var isRemoved: Bool {
        var info = stat()
        return fstat(self.descriptor, &info) != 0 || info.st_nlink == 0
    }
}

/// Why a folder could not be opened.
struct PinningError: Error, CustomStringConvertible {
    var errno: Int32
    var path: String

    var description: String {
        switch self.errno {
        case ELOOP, ENOTDIR: "'\(self.path)' is in the way: it must be a folder, not a link or a file"
        default: "'\(self.path)': \(String(cString: strerror(self.errno)))"
        }
    }
}
