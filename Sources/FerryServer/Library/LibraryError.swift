import FerryProtocol

/// Why the library refused or failed an operation, in terms a client is told.
enum LibraryError: Error, Hashable, Sendable, CustomStringConvertible {
    case noSuchFile(String)
    case fileExists(String)
    case storage(String)

    var errorCode: ErrorCode {
        switch self {
        case .noSuchFile: .noSuchFile
        case .fileExists: .fileExists
        case .storage: .storageFailure
        }
    }

    var description: String {
        switch self {
        case .noSuchFile(let name): "no such file: '\(name)'"
        case .fileExists(let name): "file exists: '\(name)' (an upload may ask to overwrite it)"
        case .storage(let detail): "storage failure: \(detail)"
        }
    }
}
