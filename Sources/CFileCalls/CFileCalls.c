#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>

#include "CFileCalls.h"

int ferry_rename_no_replace(int from_folder, const char *from, int to_folder, const char *to) {
#if defined(__linux__) && defined(RENAME_NOREPLACE)
    return renameat2(from_folder, from, to_folder, to, RENAME_NOREPLACE);
#else
    (void)from_folder;
    (void)from;
    (void)to_folder;
    (void)to;
    errno = ENOSYS;
    return -1;
#endif
}

int ferry_start_writeback(int descriptor, long long offset, long long length) {
#if defined(__linux__)
    return sync_file_range(descriptor, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)descriptor;
    (void)offset;
    (void)length;
    errno = ENOSYS;
    return -1;
#endif
}

int ferry_open_folder(const char *path) {
#if defined(O_PATH)
    return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
#else
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
#endif
}
