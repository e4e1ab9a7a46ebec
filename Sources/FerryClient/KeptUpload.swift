import FerryProtocol
import FerryTransport
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The client's half of an upload the server keeps to be resumed (protocol version 4, SPEC.md §7.3): the token READY
/// gave, and the identity of the source file it was sent from.
///
/// One record per server, account and name, in `$XDG_STATE_HOME/ferry/uploads` (or `~/.local/state/ferry/uploads`),
/// private to the user (the token lets whoever holds it resume the upload). It is written when READY names a token
/// and removed once the upload is answered. A later `put` of the same name to the same server resumes with it only if
/// the source is still the same file, unchanged: same device and inode, size, modification and status-change times.
/// Otherwise it sends the token with offset 0, which empties what the server kept, and starts again.
public struct KeptUpload: Hashable, Sendable {
    var server: String
    var user: String?
    var name: String
    var token: UploadToken
    var source: SourceIdentity

    /// What identifies a version of the source file.
    struct SourceIdentity: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: UInt64
        var modified: Int64
        var changed: Int64

        init(device: UInt64, inode: UInt64, size: UInt64, modified: Int64, changed: Int64) {
            self.device = device
            self.inode = inode
            self.size = size
            self.modified = modified
            self.changed = changed
        }

        init(_ info: stat) {
            self.device = UInt64(info.st_dev)
            self.inode = UInt64(info.st_ino)
            self.size = UInt64(max(info.st_size, 0))
            self.modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            self.changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        }
    }

    /// `$XDG_STATE_HOME/ferry/uploads`, or `~/.local/state/ferry/uploads`; `nil` with neither variable set.
    public static var defaultFolder: String? {
        if let state = getenv("XDG_STATE_HOME").map({ String(cString: $0) }), state.hasPrefix("/") {
            return state + "/ferry/uploads"
        }
        if let home = getenv("HOME").map({ String(cString: $0) }), !home.isEmpty {
            return home + "/.local/state/ferry/uploads"
        }
        return nil
    }

    /// The record's file in `folder` for this server, account and name: a 64-bit FNV-1a hash of the three (the
    /// record itself names them, and is checked).
    static func path(in folder: String, server: String, user: String?, name: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(server)\n\(user ?? "")\n\(name)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        let digits = String(hash, radix: 16)
        return folder + "/" + String(repeating: "0", count: 16 - digits.count) + digits + ".upload"
    }

    static let header = "ferry-kept-upload 1"

    var encoded: String {
        """
        \(Self.header)
        server \(self.server)
        token \(self.token)
        device \(self.source.device)
        inode \(self.source.inode)
        size \(self.source.size)
        modified \(self.source.modified)
        changed \(self.source.changed)
        user \(self.user.map { "=" + $0 } ?? "-")
        name \(self.name)

        """
    }

    init(server: String, user: String?, name: String, token: UploadToken, source: SourceIdentity) {
        self.server = server
        self.user = user
        self.name = name
        self.token = token
        self.source = source
    }

    init?(parsing text: String) {
        guard let fields = KeyValueRecord.fields(of: text, header: Self.header) else { return nil }
        guard let server = fields["server"], let name = fields["name"], let user = fields["user"],
            let token = fields["token"].flatMap({ UploadToken(hex: $0) }),
            let device = fields["device"].flatMap({ UInt64($0) }),
            let inode = fields["inode"].flatMap({ UInt64($0) }),
            let size = fields["size"].flatMap({ UInt64($0) }),
            let modified = fields["modified"].flatMap({ Int64($0) }),
            let changed = fields["changed"].flatMap({ Int64($0) })
        else { return nil }
        self.init(
            server: String(server),
            user: user == "-" ? nil : String(user.dropFirst()),
            name: String(name),
            token: token,
            source: SourceIdentity(device: device, inode: inode, size: size, modified: modified, changed: changed)
        )
    }

    /// The record for this server, account and name in `folder`, if there is one that says so. Blocking.
    static func find(in folder: String, server: String, user: String?, name: String) -> KeptUpload? {
        let path = Self.path(in: folder, server: server, user: user, name: name)
        guard
            case .contents(let bytes, _) = BlockingFileIO.readSmallFile(at: path, upTo: 8192, followingLinks: false),
            let record = KeptUpload(parsing: String(decoding: bytes.readableBytesView, as: UTF8.self)),
            record.server == server, record.user == user, record.name == name
        else { return nil }
        return record
    }

    /// Writes the record whole into `folder` (made private to the user if missing). Blocking. Returns whether it
    /// was written.
    @discardableResult
    func write(in folder: String) -> Bool {
        guard BlockingFileIO.makeFolders(folder, mode: 0o700) == nil else { return false }
        let file = Self.path(in: folder, server: self.server, user: self.user, name: self.name)
        return BlockingFileIO.writeWhole(ByteBuffer(string: self.encoded), to: file, mode: 0o600) == nil
    }

    /// Removes the record for this server, account and name. Blocking.
    static func remove(in folder: String, server: String, user: String?, name: String) {
        unlink(Self.path(in: folder, server: server, user: user, name: name))
    }
}
