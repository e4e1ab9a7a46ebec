import CFileCalls

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Gives a finished, flushed temporary file its final name, the one way both sides of a transfer do it.
///
/// Without `replacing`, `renameat2(2)` with `RENAME_NOREPLACE` (or, where a file system lacks it, `link(2)`) creates
/// the name only if nothing has it, atomically: of two writers racing for one new name exactly one wins, and an
/// existing file is never touched. With it, `rename(2)` replaces the old file atomically, so a reader sees the old
/// file or the new one, never a mix. Either way the temporary name is gone afterwards. A blocking call: run it on a
/// thread pool.
///
/// - Returns: 0, or the `errno` that stopped it (`EEXIST` when the name was taken and not to be replaced).
public func publishFile(_ temporary: String, as destination: String, replacing: Bool) -> Int32 {
    publishFile(temporary, in: AT_FDCWD, as: destination, in: AT_FDCWD, replacing: replacing)
}

/// ``publishFile(_:as:replacing:)`` with each name relative to an open folder (or `AT_FDCWD`), so that a caller
/// publishing many files looks up one name per call instead of walking their whole paths again.
public func publishFile(
    _ temporary: String,
    in temporaryFolder: Int32,
    as destination: String,
    in destinationFolder: Int32,
    replacing: Bool
) -> Int32 {
    if replacing {
        let failure = renameat(temporaryFolder, temporary, destinationFolder, destination) == 0 ? 0 : errno
        if failure != 0 { unlinkat(temporaryFolder, temporary, 0) }
        return failure
    }
    if ferry_rename_no_replace(temporaryFolder, temporary, destinationFolder, destination) == 0 {
        return 0
    }
    let refusal = errno
    // EINVAL: the file system lacks the flag; ENOSYS, EPERM: the system or a sandbox lacks the call.
    guard refusal == EINVAL || refusal == ENOSYS || refusal == EPERM else {
        unlinkat(temporaryFolder, temporary, 0)
        return refusal
    }
    // `link` refuses an existing name just as atomically.
    let failure = linkat(temporaryFolder, temporary, destinationFolder, destination, 0) == 0 ? 0 : errno
    unlinkat(temporaryFolder, temporary, 0)
    return failure
}
