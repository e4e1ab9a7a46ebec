#ifndef C_FILE_CALLS_H
#define C_FILE_CALLS_H

/// Linux file calls that Swift's Glibc module does not export (they need _GNU_SOURCE).

/// Renames `from` (relative to the folder `from_folder`, or `AT_FDCWD`) to `to` (relative to `to_folder`) only if
/// `to` does not exist, atomically (Linux `renameat2` with `RENAME_NOREPLACE`). Returns 0, or -1 with `errno` set:
/// `EEXIST` when `to` exists, `EINVAL` or `ENOSYS` where the file system or the system cannot do it (the caller then
/// falls back to `link` and `unlink`).
int ferry_rename_no_replace(int from_folder, const char *from, int to_folder, const char *to);

/// Asks the kernel to start writing `length` bytes at `offset` of an open file to disk, without waiting for it
/// (Linux `sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Returns 0, or -1 with `errno` set (`ENOSYS` elsewhere).
int ferry_start_writeback(int descriptor, long long offset, long long length);

/// Opens a folder only to look names up in it (`openat`, `fstatat`, `renameat`…): with `O_PATH` on Linux, so that
/// search permission is enough, as for a whole path. Returns the descriptor (close-on-exec), or -1 with `errno` set.
int ferry_open_folder(const char *path);

#endif
