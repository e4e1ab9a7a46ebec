// The floor of a Ferry upload on this machine: the least CPU any implementation can spend moving a file as DATA
// frames (SPEC.md §4: type, flags, length, payload, CRC-32 of all of it by zlib), with no protocol around it, no
// event loop, no tasks and no thread hand-offs: one sending process, one receiving process, one thread each.
//
//     gcc -O2 -o upload-floor Benchmarks/upload-floor.c -lz
//     upload-floor receive PORT DESTINATION          writes the payloads to DESTINATION, checking every frame
//     upload-floor send PORT SOURCE CHUNK MODE       MODE: read | mmap | sendfile
//
// Senders: `read` reads a chunk, checksums it and writes header, chunk and trailer with one writev (the copies
// Ferry's client makes); `mmap` checksums the mapped file and writes from the mapping (no read copy); `sendfile`
// reads the chunk to checksum it and then sends the same bytes again from the page cache with sendfile (no write
// copy). The receiver reads each header and trailer apart from the payload, with the payload read straight into
// one reused buffer, checksums it there and writes it to the file: no reassembly copy. Each prints the CPU seconds
// (user + system) it used and its wall time. Run by Benchmarks/upload-floor.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void report(const char *who, double started, uint64_t bytes) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
                 usage.ru_stime.tv_usec / 1e6;
    double gib = bytes / (double)(1 << 30);
    printf("%s: %.3f s wall, %.3f s CPU per GiB (user %.3f, system %.3f)\n", who, (now() - started) / gib, cpu / gib,
           (usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6) / gib,
           (usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6) / gib);
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static int read_exactly(int fd, void *buffer, size_t length) {
    size_t done = 0;
    while (done < length) {
        ssize_t n = recv(fd, (char *)buffer + done, length - done, MSG_WAITALL);
        if (n <= 0) return done == 0 && n == 0 ? 0 : -1;
        done += (size_t)n;
    }
    return 1;
}

static void write_all(int fd, const void *buffer, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, buffer, length);
        if (n <= 0) fail("write");
        buffer = (const char *)buffer + n;
        length -= (size_t)n;
    }
}

static void header(unsigned char out[10], uint64_t length) {
    out[0] = 0x30;  // DATA
    out[1] = 0;
    for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)(length >> (56 - 8 * i));
}

static void trailer(unsigned char out[4], uint32_t crc) {
    for (int i = 0; i < 4; i++) out[i] = (unsigned char)(crc >> (24 - 8 * i));
}

static int receive(int port, const char *destination) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1) != 0) fail("listen");
    int connection = accept(listener, NULL, NULL);
    if (connection < 0) fail("accept");
    int file = open(destination, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (file < 0) fail("open");
    size_t capacity = 16 << 20;
    unsigned char *payload = malloc(capacity);
    double started = now();
    uint64_t offset = 0;
    for (;;) {
        unsigned char head[10], tail[4];
        int got = read_exactly(connection, head, sizeof head);
        if (got == 0) break;
        if (got < 0) fail("header");
        uint64_t length = 0;
        for (int i = 0; i < 8; i++) length = length << 8 | head[2 + i];
        if (length > capacity) {
            fprintf(stderr, "frame too large\n");
            return 1;
        }
        if (read_exactly(connection, payload, length) != 1 || read_exactly(connection, tail, 4) != 1) fail("payload");
        uint32_t crc = crc32(crc32(0, head, sizeof head), payload, (uInt)length);
        uint32_t carried = (uint32_t)tail[0] << 24 | tail[1] << 16 | tail[2] << 8 | tail[3];
        if (crc != carried) {
            fprintf(stderr, "bad CRC at %llu\n", (unsigned long long)offset);
            return 1;
        }
        for (uint64_t done = 0; done < length;) {
            ssize_t n = pwrite(file, payload + done, length - done, (off_t)(offset + done));
            if (n <= 0) fail("pwrite");
            done += (uint64_t)n;
        }
        offset += length;
    }
    close(file);
    report("receiver", started, offset);
    return 0;
}

static int send_file(int port, const char *source, size_t chunk, const char *mode) {
    int file = open(source, O_RDONLY);
    if (file < 0) fail("open");
    struct stat info;
    fstat(file, &info);
    uint64_t size = (uint64_t)info.st_size;
    int connection = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    for (int attempt = 0; connect(connection, (struct sockaddr *)&address, sizeof address) != 0; attempt++) {
        if (attempt > 200) fail("connect");
        usleep(10000);
    }
    unsigned char *buffer = malloc(chunk);
    unsigned char *mapped = NULL;
    if (strcmp(mode, "mmap") == 0) {
        mapped = mmap(NULL, size, PROT_READ, MAP_SHARED, file, 0);
        if (mapped == MAP_FAILED) fail("mmap");
    }
    double started = now();
    for (uint64_t offset = 0; offset < size;) {
        size_t length = size - offset < chunk ? (size_t)(size - offset) : chunk;
        unsigned char head[10], tail[4];
        header(head, length);
        const unsigned char *bytes = buffer;
        if (mapped) {
            bytes = mapped + offset;
        } else if (pread(file, buffer, length, (off_t)offset) != (ssize_t)length) {
            fail("pread");
        }
        trailer(tail, (uint32_t)crc32(crc32(0, head, sizeof head), bytes, (uInt)length));
        if (strcmp(mode, "sendfile") == 0) {
            write_all(connection, head, sizeof head);
            off_t at = (off_t)offset;
            for (size_t sent = 0; sent < length;) {
                ssize_t n = sendfile(connection, file, &at, length - sent);
                if (n <= 0) fail("sendfile");
                sent += (size_t)n;
            }
            write_all(connection, tail, sizeof tail);
        } else {
            struct iovec parts[3] = {{head, 10}, {(void *)bytes, length}, {tail, 4}};
            size_t total = 14 + length;
            while (total > 0) {
                ssize_t n = writev(connection, parts, 3);
                if (n <= 0) fail("writev");
                total -= (size_t)n;
                for (int i = 0; i < 3 && n > 0; i++) {
                    size_t used = (size_t)n < parts[i].iov_len ? (size_t)n : parts[i].iov_len;
                    parts[i].iov_base = (char *)parts[i].iov_base + used;
                    parts[i].iov_len -= used;
                    n -= (ssize_t)used;
                }
            }
        }
        offset += length;
    }
    shutdown(connection, SHUT_WR);
    char ignored;
    while (read(connection, &ignored, 1) > 0) {}
    report(mode, started, size);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "receive") == 0) return receive(atoi(argv[2]), argv[3]);
    if (argc == 6 && strcmp(argv[1], "send") == 0) return send_file(atoi(argv[2]), argv[3], (size_t)atol(argv[4]), argv[5]);
    fprintf(stderr, "usage: upload-floor receive PORT DESTINATION | send PORT SOURCE CHUNK read|mmap|sendfile\n");
    return 2;
}
