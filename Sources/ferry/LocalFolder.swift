import FerryTransport

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Expands folders named on the command line into the files to upload: the library is flat, so a folder stands
/// for the regular files directly inside it, in name order.
///
/// Links inside a folder are not followed (as `cp -r` and `rsync -r` do not): a link can lead anywhere, and a
/// folder handed to `ferry put` should not upload what lies outside it, a private key say. They are counted among
/// the skipped entries; a link named on the command line itself is followed, as the person asked for it.
enum LocalFolder {
    static func expand(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        for path in paths {
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                files.append(path)  // A file, or something missing that the upload will report.
                continue
            }
            guard let directory = opendir(path) else {
                throw ExpansionError(message: "cannot read the folder '\(path)': \(String(cString: strerror(errno)))")
            }
            defer { closedir(directory) }
            var names: [String] = []
            var skipped = 0
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                guard name != ".", name != ".." else { continue }
                let child = path.hasSuffix("/") ? path + name : path + "/" + name
                if name.hasPrefix(".") || !Self.isRegularFile(child, type: Int32(entry.pointee.d_type)) {
                    skipped += 1
                    continue
                }
                names.append(child)
            }
            if skipped > 0 {
                Terminal.writeError(
                    "ferry: \(path): skipped \(skipped) entries (hidden files, links and folders are not uploaded)\n"
                )
            }
            if names.isEmpty {
                print("nothing to upload in '\(path)': it holds no regular files")
            }
            files += names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        }
        return files
    }

    /// The folder entry's own type when it gives one (no `stat` per file of a large folder); an entry of unknown
    /// type is looked up without following a link.
    private static func isRegularFile(_ path: String, type: Int32) -> Bool {
        switch type {
        case Int32(DT_REG):
            return true
        case Int32(DT_UNKNOWN):
            var info = stat()
            return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        default:
            return false
        }
    }

    /// Makes the folder at `path` and any missing folders above it (as `mkdir -p` does), before anything is
    /// downloaded into it; a file in the way is one error, not one per download.
    static func make(_ path: String) throws {
        if let (folder, error) = BlockingFileIO.makeFolders(path, mode: 0o777) {
            throw ExpansionError(message: "cannot create the folder '\(folder)': \(error)")
        }
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw ExpansionError(message: "'\(path)' is in the way: --output must name a folder with several files")
        }
    }

    struct ExpansionError: Error, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }
}
