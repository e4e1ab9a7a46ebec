#ifndef C_RENAME_NO_REPLACE_H
#define C_RENAME_NO_REPLACE_H

/// Renames `from` (relative to the folder `from_folder`, or `AT_FDCWD`) to `to` (relative to `to_folder`) only if
/// `to` does not exist, atomically (Linux `renameat2` with `RENAME_NOREPLACE`). Returns 0, or -1 with `errno` set:
/// `EEXIST` when `to` exists, `EINVAL` or `ENOSYS` where the file system or the system cannot do it (the caller then
/// falls back to `link` and `unlink`).
int ferry_rename_no_replace(int from_folder, const char *from, int to_folder, const char *to);

#endif
