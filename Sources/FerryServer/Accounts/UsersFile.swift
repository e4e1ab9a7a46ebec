import FerryTransport
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The accounts a server knows: who may log in, with what password, and with which ``Permission``.
///
/// Kept in a text file that ferryd itself writes (`ferryd users add|remove|list`), one account per line:
///
///     NAME PERMISSION scrypt LOG2N R P SALT HASH
///
/// with the salt and hash in hexadecimal; `#` starts a comment. The file is written whole under a temporary name
/// and renamed into place, with mode 0600, and a file that anyone but its owner may write is refused: whoever
/// can write it can give themselves every permission.
public struct UsersFile: Sendable, Equatable {
    public struct Account: Sendable, Equatable {
        public var permission: Permission
        public var password: PasswordHash
    }

    public private(set) var accounts: [String: Account] = [:]

    public init() {}

    /// Account names: 1 to 64 of ASCII letters, digits, `.`, `_`, `-` and `@`.
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: ".")
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "@")
            }
    }

    public mutating func set(_ name: String, permission: Permission, password: PasswordHash) {
        self.accounts[name] = Account(permission: permission, password: password)
    }

    @discardableResult
    public mutating func remove(_ name: String) -> Bool {
        self.accounts.removeValue(forKey: name) != nil
    }

    /// The account `name` if `password` is its password. Takes the time of one password hash whether or not the
    /// account exists, so the time of an answer does not tell which names exist.
    public func authenticate(_ name: String, password: String) -> Account? {
        guard let account = self.accounts[name] else {
            _ = Self.decoy.matches(password)
            return nil
        }
        return account.password.matches(password) ? account : nil
    }

    /// Checked against when a name has no account, so that its refusal costs what a wrong password costs.
    private static let decoy = PasswordHash(
        logRounds: PasswordHash.defaultParameters.logRounds,
        blockSize: PasswordHash.defaultParameters.blockSize,
        parallelism: PasswordHash.defaultParameters.parallelism,
        salt: Array(repeating: 0, count: PasswordHash.saltLength),
        hash: Array(repeating: 0, count: PasswordHash.hashLength)
    )

    // MARK: - The file

    /// Reads the file at `path`. Blocking.
    ///
    /// - Throws: ``UsersFileError`` if it cannot be read, may be written by others than its owner, or holds a
    ///   line that is not an account.
    public static func load(from path: String) throws(UsersFileError) -> UsersFile {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw UsersFileError("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw UsersFileError("'\(path)' is not a regular file")
        }
        guard info.st_uid == 0 || info.st_uid == geteuid() else {
            throw UsersFileError(
                "'\(path)' belongs to user \(info.st_uid), not to root or to the user ferryd runs as: whoever owns it can "
                    + "give themselves every permission"
            )
        }
        guard info.st_mode & 0o022 == 0 else {
            throw UsersFileError(
                "'\(path)' may be written by others than its owner (mode \(String(info.st_mode & 0o777, radix: 8))): "
                    + "anyone who can write it can give themselves every permission; chmod 600 it"
            )
        }
        guard info.st_size <= Self.largestFile else {
            throw UsersFileError("'\(path)' is larger than a users file can be")
        }
        switch BlockingFileIO.read(descriptor, upTo: Int(info.st_size)) {
        case .success(let bytes):
            return try Self.parse(String(buffer: bytes), path: path)
        case .failure(let error):
            throw UsersFileError("cannot read '\(path)': \(error)")
        }
    }

    /// 16 MiB: far more than any list of accounts.
    static let largestFile = 16 << 20

    static func parse(_ text: String, path: String) throws(UsersFileError) -> UsersFile {
        var file = UsersFile()
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = line.prefix { $0 != "#" }.split(separator: " ", omittingEmptySubsequences: true)
            guard !content.isEmpty else { continue }
            guard content.count == 8, Self.isValidName(String(content[0])),
                let permission = Permission(name: String(content[1])), content[2] == "scrypt",
                let logRounds = Int(content[3]), (10...PasswordHash.largestLogRounds).contains(logRounds),
                let blockSize = Int(content[4]), (1...16).contains(blockSize),
                let parallelism = Int(content[5]), (1...4).contains(parallelism),
                128 << logRounds * blockSize <= PasswordHash.largestMemory,
                let salt = Self.bytes(hex: content[6]), !salt.isEmpty,
                let hash = Self.bytes(hex: content[7]), hash.count == PasswordHash.hashLength
            else {
                throw UsersFileError(
                    "'\(path)', line \(index + 1): not an account (NAME PERMISSION scrypt LOG2N R P SALT HASH)"
                )
            }
            file.set(
                String(content[0]),
                permission: permission,
                password: PasswordHash(
                    logRounds: logRounds,
                    blockSize: blockSize,
                    parallelism: parallelism,
                    salt: salt,
                    hash: hash
                )
            )
        }
        return file
    }

    /// The file's text, accounts in name order.
    var text: String {
        var text = "# ferryd users file: NAME PERMISSION scrypt LOG2N R P SALT HASH. Edit with 'ferryd users'.\n"
        for (name, account) in self.accounts.sorted(by: { $0.key < $1.key }) {
            let password = account.password
            text +=
                "\(name) \(account.permission) scrypt \(password.logRounds) \(password.blockSize) "
                + "\(password.parallelism) \(Self.hex(password.salt)) \(Self.hex(password.hash))\n"
        }
        return text
    }

    /// Writes the file at `path` atomically (a temporary file beside it, flushed, renamed over it) with mode 0600.
    /// Blocking.
    public func save(to path: String) throws(UsersFileError) {
        if let failure = BlockingFileIO.writeWhole(
            ByteBuffer(string: self.text),
            to: path,
            mode: 0o600,
            exactMode: true
        ) {
            throw UsersFileError("cannot write '\(path)': \(failure)")
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func bytes(hex: Substring) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0, digits.count <= 256 else { return nil }
        var bytes: [UInt8] = []
        var index = 0
        while index < digits.count {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Why a users file could not be read or written, in a sentence for the operator.
public struct UsersFileError: Error, CustomStringConvertible, Equatable {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}

extension Permission {
    /// `read`, `upload` or `full`.
    public init?(name: String) {
        guard let permission = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = permission
    }
}
