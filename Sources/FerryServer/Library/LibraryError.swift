import FerryProtocol

/// Why the library refused or failed an operation, in terms a client is told.
enum LibraryError: Error, Hashable, Sendable, CustomStringConvertible {
    case noSuchFile(String)
    case fileExists(String)
    /// A name in the way that is not a file (a folder, a link): never replaced.
    case notAFile(String)
    case storage(String)

    var errorCode: ErrorCode {
        switch self {
        case .noSuchFile: .noSuchFile
        case .fileExists, .notAFile: .fileExists
        case .storage: .storageFailure
        }
    }

    var description: String {
        switch self {
        case .noSuchFile(let name): "no such file: '\(name)'"
        case .fileExists(let name): "file exists: '\(name)' (an upload may ask to overwrite it)"
        case .notAFile(let name): "'\(name)' is taken by something that is not a file; it is never replaced"
        case .storage(let detail): "storage failure: \(detail)"
        }
    }
}
