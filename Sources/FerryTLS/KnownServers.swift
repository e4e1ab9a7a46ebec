import FerryTransport
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The servers this user has decided to trust by their certificate's fingerprint, SSH's `known_hosts` for Ferry.
///
/// One line per server, `HOST:PORT FINGERPRINT`; `#` starts a comment. A server is named the way the user named it
/// (`files.example.org:8888`, `[::1]:8888`), as SSH does: the same machine under two names is two entries.
public struct KnownServers: Sendable {
    /// Where the file is (it may not exist yet).
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// `$XDG_CONFIG_HOME/ferry/known_servers`, or `~/.config/ferry/known_servers`; `nil` with neither variable set.
    public static var defaultPath: String? {
        if let config = Self.environment("XDG_CONFIG_HOME"), config.hasPrefix("/") {
            return config + "/ferry/known_servers"
        }
        if let home = Self.environment("HOME"), !home.isEmpty {
            return home + "/.config/ferry/known_servers"
        }
        return nil
    }

    /// The largest file read: about 10,000 servers.
    static let largestFile = 1 << 20

    /// What the file says of `server`: its fingerprint and the line it is on (from 1); `nil` if it is not there.
    public func entry(for server: String) throws(TLSSetupError) -> (fingerprint: CertificateFingerprint, line: Int)? {
        for (number, line) in try self.lines().enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, !fields[0].hasPrefix("#"), fields[0] == server else { continue }
            guard let fingerprint = CertificateFingerprint(fields[1]) else {
                throw TLSSetupError("line \(number + 1) of \(self.path) is not 'HOST:PORT FINGERPRINT'")
            }
            return (fingerprint, number + 1)
        }
        return nil
    }

    /// Records `fingerprint` as `server`'s, replacing what was there: written whole (``BlockingFileIO/writeWhole(_:to:mode:exactMode:replacing:flushing:)``),
    /// mode 0600, in a folder made with mode 0700 if missing.
    public func remember(_ fingerprint: CertificateFingerprint, for server: String) throws(TLSSetupError) {
        var kept = try self.lines().filter { line in
            line.split(separator: " ", maxSplits: 1).first.map(String.init) != server
        }
        while kept.last?.isEmpty == true { kept.removeLast() }
        if kept.isEmpty {
            kept = ["# Ferry's known servers: HOST:PORT and the SHA-256 fingerprint of its TLS certificate."]
        }
        kept.append("\(server) \(fingerprint)")
        let contents = kept.joined(separator: "\n") + "\n"
        try Self.makeFolders(for: self.path)
        if let failure = BlockingFileIO.writeWhole(ByteBuffer(string: contents), to: self.path, mode: 0o600) {
            throw TLSSetupError("cannot write '\(self.path)': \(failure)")
        }
    }

    private func lines() throws(TLSSetupError) -> [String] {
        switch BlockingFileIO.readSmallFile(at: self.path, upTo: Self.largestFile, followingLinks: true) {
        case .contents(let bytes, _):
            return String(decoding: bytes.readableBytesView, as: UTF8.self)
                .split(separator: "\n", omittingEmptySubsequences: false)
                .map { String($0.hasSuffix("\r") ? $0.dropLast() : $0) }
        case .cannotOpen(let error) where error.code == ENOENT:
            return []
        case .cannotOpen(let error), .cannotRead(let error):
            throw TLSSetupError("cannot read '\(self.path)': \(error)")
        case .larger:
            throw TLSSetupError("'\(self.path)' is larger than \(Self.largestFile >> 20) MiB")
        case .notRegular:
            throw TLSSetupError("'\(self.path)' is not a regular file")
        case .changed:
            throw TLSSetupError("'\(self.path)' changed while it was read; try again")
        }
    }

    /// Creates the folders above `path` that are missing, private to the user (0700).
    private static func makeFolders(for path: String) throws(TLSSetupError) {
        guard let slash = path.lastIndex(of: "/") else { return }
        if let (folder, error) = BlockingFileIO.makeFolders(String(path[..<slash]), mode: 0o700) {
            throw TLSSetupError("cannot create the folder '\(folder)': \(error)")
        }
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
