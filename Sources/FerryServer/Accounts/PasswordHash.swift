import Crypto
import _CryptoExtras

/// A password kept as scrypt's output, never as itself: a users file that leaks costs an attacker scrypt's price
/// (about 32 MiB and tens of milliseconds) for every guess.
///
/// The parameters are recorded with each hash, so they can be raised for new entries without breaking old ones.
public struct PasswordHash: Hashable, Sendable {
    /// log2 of scrypt's cost N.
    public var logRounds: Int
    public var blockSize: Int
    public var parallelism: Int
    public var salt: [UInt8]
    public var hash: [UInt8]

    /// What new entries use: N = 2^15, r = 8, p = 1 (32 MiB), the parameters RFC 7914 and OWASP suggest for logins.
    public static let defaultParameters = (logRounds: 15, blockSize: 8, parallelism: 1)
    static let saltLength = 16
    static let hashLength = 32
    /// The most a users file may ask of the server per log-in: scrypt needs 128 · N · r bytes, here at most
    /// ``largestMemory`` (and p at most 4). A file asking for more is refused when read, not found out when a
    /// client logs in.
    static let largestLogRounds = 20
    static let largestMemory = 256 << 20

    /// Hashes `password` with a fresh random salt.
    public static func make(_ password: String) throws -> PasswordHash {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<Self.saltLength).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let parameters = Self.defaultParameters
        return PasswordHash(
            logRounds: parameters.logRounds,
            blockSize: parameters.blockSize,
            parallelism: parameters.parallelism,
            salt: salt,
            hash: try Self.derive(
                password,
                salt: salt,
                logRounds: parameters.logRounds,
                blockSize: parameters.blockSize,
                parallelism: parameters.parallelism
            )
        )
    }

    /// Whether `password` is the one this hash was made from. The comparison takes the same time wherever the
    /// bytes differ.
    public func matches(_ password: String) -> Bool {
        guard
            let derived = try? Self.derive(
                password,
                salt: self.salt,
                logRounds: self.logRounds,
                blockSize: self.blockSize,
                parallelism: self.parallelism
            ), derived.count == self.hash.count
        else { return false }
        var difference: UInt8 = 0
        for (one, other) in zip(derived, self.hash) {
            difference |= one ^ other
        }
        return difference == 0
    }

    private static func derive(
        _ password: String,
        salt: [UInt8],
        logRounds: Int,
        blockSize: Int,
        parallelism: Int
    ) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(
            from: Array(password.utf8),
            salt: salt,
            outputByteCount: Self.hashLength,
            rounds: 1 << logRounds,
            blockSize: blockSize,
            parallelism: parallelism,
            maxMemory: 128 * (1 << logRounds) * blockSize * (parallelism + 2)
        )
        return key.withUnsafeBytes { Array($0) }
    }
}
