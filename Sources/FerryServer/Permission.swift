/// What a client may do with the library, from least to most.
public enum Permission: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    /// LIST and RETR.
    case read = 1
    /// Read, and STOR of names not taken yet.
    case upload = 2
    /// Upload, and overwrite, DELETE and RENAME.
    case full = 3

    public static func < (lhs: Permission, rhs: Permission) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    public var description: String {
        switch self {
        case .read: "read"
        case .upload: "upload"
        case .full: "full"
        }
    }
}
