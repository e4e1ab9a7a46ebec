#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Expands folders named on the command line into the files to upload: the library is flat, so a folder stands
/// for the regular files directly inside it (what `lftp mirror -R` or `cp DIR/* ...` would pick), in name order.
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
                Terminal.writeError("ferry: \(path): skipped \(skipped) hidden or non-regular entries\n")
            }
            files += names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        }
        return files
    }

    /// The folder entry's own type when it gives one (no `stat` per file of a large folder); a link, followed
    /// as `stat` does, or an entry of unknown type is looked up.
    private static func isRegularFile(_ path: String, type: Int32) -> Bool {
        switch type {
        case Int32(DT_REG):
            return true
        case Int32(DT_LNK), Int32(DT_UNKNOWN):
            var info = stat()
            return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        default:
            return false
        }
    }

    struct ExpansionError: Error, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }
}
