// The floors of a Ferry transfer on this machine: the least any implementation can spend moving a file as DATA
// frames (SPEC.md §4: type, flags, length, payload, CRC-32 of all of it by zlib), with no protocol around it, no
// event loop and no tasks: one sending process, one receiving process.
//
//     gcc -O2 -o upload-floor Benchmarks/upload-floor.c -lz -lpthread
//     upload-floor RECEIVER PORT DESTINATION         writes the payloads to DESTINATION, checking every frame
//     upload-floor send PORT SOURCE CHUNK MODE       MODE: read | mmap | sendfile | cached
//
// Senders: `read` reads a chunk, checksums it and writes header, chunk and trailer with one writev (the copies
// Ferry's client makes); `mmap` checksums the mapped file and writes from the mapping (no read copy); `sendfile`
// reads the chunk to checksum it and then sends the same bytes again from the page cache with sendfile (no write
// copy); `cached` only sends with sendfile, its CRCs computed before the clock starts, as ferryd sends a download.
// Receivers: `receive` (one thread) reads each header and trailer apart from the payload, with the payload read
// straight into one reused buffer, checksums it there and writes it to the file: no reassembly copy.
// `receive-threaded` does the same with the writes on a second thread (four payload buffers between them), as
// `ferry get` splits its work; `receive-ring` reads as much as has arrived into a ring mapped twice (every frame
// contiguous wherever it wraps), checks frames where they landed and writes them from there on the second thread;
// `receive-ring-split` also moves half of each payload's CRC to the writing thread (crc32_combine). Each prints the
// CPU seconds (user + system) it used and its wall time. Run by Benchmarks/upload-floor.sh.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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

// The one connection a receiver takes, on 127.0.0.1:PORT.
static int accept_one(int port) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1) != 0) fail("listen");
    int connection = accept(listener, NULL, NULL);
    if (connection < 0) fail("accept");
    return connection;
}

static int create_destination(const char *path) {
    int file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (file < 0) fail("open");
    return file;
}

// A frame header's payload length and a trailer's CRC, big-endian.
static uint64_t payload_length(const unsigned char head[10]) {
    uint64_t length = 0;
    for (int i = 0; i < 8; i++) length = length << 8 | head[2 + i];
    return length;
}

static uint32_t carried_crc(const unsigned char tail[4]) {
    return (uint32_t)tail[0] << 24 | (uint32_t)tail[1] << 16 | (uint32_t)tail[2] << 8 | tail[3];
}

// Reads one frame, its payload straight into `payload`, and checks it: 1 with its payload length, 0 at the end of
// the stream; a frame too large or damaged ends the program.
static int read_frame(int connection, unsigned char *payload, size_t capacity, uint64_t *length) {
    unsigned char head[10], tail[4];
    int got = read_exactly(connection, head, sizeof head);
    if (got == 0) return 0;
    if (got < 0) fail("header");
    *length = payload_length(head);
    if (*length > capacity) {
        fprintf(stderr, "frame too large\n");
        exit(1);
    }
    if (read_exactly(connection, payload, *length) != 1 || read_exactly(connection, tail, 4) != 1) fail("payload");
    if ((uint32_t)crc32(crc32(0, head, sizeof head), payload, (uInt)*length) != carried_crc(tail)) {
        fprintf(stderr, "bad CRC\n");
        exit(1);
    }
    return 1;
}

static int receive(int port, const char *destination) {
    int connection = accept_one(port);
    int file = create_destination(destination);
    size_t capacity = 16 << 20;
    unsigned char *payload = malloc(capacity);
    double started = now();
    uint64_t offset = 0;
    for (uint64_t length; read_frame(connection, payload, capacity, &length);) {
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

// The two-thread receiver: one thread reads and checks frames, another writes their payloads, as `ferry get` splits the
// work. Payloads go straight into one of `SLOTS` buffers of one frame each, handed to the writer through a ring.
#define SLOTS 4
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned char *buffer[SLOTS];
    uint64_t length[SLOTS], offset[SLOTS];
    unsigned filled, emptied;  // slots handed to the writer, and given back by it
    int finished;
    int file;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};

static void *write_slots(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&ring.lock);
        while (ring.emptied == ring.filled && !ring.finished) pthread_cond_wait(&ring.changed, &ring.lock);
        if (ring.emptied == ring.filled) {
            pthread_mutex_unlock(&ring.lock);
            return NULL;
        }
        unsigned slot = ring.emptied % SLOTS;
        pthread_mutex_unlock(&ring.lock);
        for (uint64_t done = 0; done < ring.length[slot];) {
            ssize_t n = pwrite(ring.file, ring.buffer[slot] + done, ring.length[slot] - done,
                               (off_t)(ring.offset[slot] + done));
            if (n <= 0) fail("pwrite");
            done += (uint64_t)n;
        }
        pthread_mutex_lock(&ring.lock);
        ring.emptied++;
        pthread_cond_signal(&ring.changed);
        pthread_mutex_unlock(&ring.lock);
    }
}

static int receive_threaded(int port, const char *destination) {
    int connection = accept_one(port);
    ring.file = create_destination(destination);
    size_t capacity = 16 << 20;
    for (int i = 0; i < SLOTS; i++) ring.buffer[i] = malloc(capacity);
    pthread_t writer;
    pthread_create(&writer, NULL, write_slots, NULL);
    double started = now();
    uint64_t offset = 0;
    for (;;) {
        pthread_mutex_lock(&ring.lock);
        while (ring.filled - ring.emptied == SLOTS) pthread_cond_wait(&ring.changed, &ring.lock);
        unsigned slot = ring.filled % SLOTS;
        pthread_mutex_unlock(&ring.lock);
        uint64_t length;
        if (!read_frame(connection, ring.buffer[slot], capacity, &length)) break;
        ring.length[slot] = length;
        ring.offset[slot] = offset;
        pthread_mutex_lock(&ring.lock);
        ring.filled++;
        pthread_cond_signal(&ring.changed);
        pthread_mutex_unlock(&ring.lock);
        offset += length;
    }
    pthread_mutex_lock(&ring.lock);
    ring.finished = 1;
    pthread_cond_signal(&ring.changed);
    pthread_mutex_unlock(&ring.lock);
    pthread_join(writer, NULL);
    close(ring.file);
    report("threaded receiver", started, offset);
    return 0;
}

// The ring receiver: the least a two-thread receiver can do. Reads of up to `RING_READ` go straight into a ring of
// `RING` bytes, mapped twice back to back so that every frame lies contiguous in memory wherever it wraps; frames are
// checked where they landed, and their payloads written from there by the second thread: no copy but the kernel's
// two (socket to ring, ring to page cache) and one CRC pass.
#define RING (16u << 20)
#define RING_READ (2u << 20)
static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned char *base;
    uint64_t queued[64][5];  // payload position in the ring stream, length, end of the frame, [split: CRC so far, carried]
    unsigned pushed, popped;
    uint64_t released;  // ring stream position up to which the writer is done
    int finished, file, split;
} ring2 = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};

static void *write_ring(void *unused) {
    (void)unused;
    uint64_t offset = 0;
    for (;;) {
        pthread_mutex_lock(&ring2.lock);
        while (ring2.popped == ring2.pushed && !ring2.finished) pthread_cond_wait(&ring2.changed, &ring2.lock);
        if (ring2.popped == ring2.pushed) {
            pthread_mutex_unlock(&ring2.lock);
            return NULL;
        }
        uint64_t *entry = ring2.queued[ring2.popped % 64];
        uint64_t at = entry[0], length = entry[1], end = entry[2];
        pthread_mutex_unlock(&ring2.lock);
        if (ring2.split) {
            uint64_t half = length / 2;
            uint32_t rest = (uint32_t)crc32(0, ring2.base + (at + half) % RING, (uInt)(length - half));
            if ((uint32_t)crc32_combine((uLong)entry[3], rest, (z_off_t)(length - half)) != (uint32_t)entry[4]) {
                fprintf(stderr, "bad CRC\n");
                exit(1);
            }
        }
        for (uint64_t done = 0; done < length;) {
            ssize_t n = pwrite(ring2.file, ring2.base + (at + done) % RING, length - done, (off_t)(offset + done));
            if (n <= 0) fail("pwrite");
            done += (uint64_t)n;
        }
        offset += length;
        pthread_mutex_lock(&ring2.lock);
        ring2.popped++;
        ring2.released = end;
        pthread_cond_signal(&ring2.changed);
        pthread_mutex_unlock(&ring2.lock);
    }
}

static int receive_ring(int port, const char *destination) {
    int connection = accept_one(port);
    ring2.file = create_destination(destination);
    int memory = memfd_create("ring", 0);
    if (memory < 0 || ftruncate(memory, RING) != 0) fail("memfd");
    unsigned char *base = mmap(NULL, 2 * (size_t)RING, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mmap(base, RING, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memory, 0) == MAP_FAILED ||
        mmap(base + RING, RING, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memory, 0) == MAP_FAILED)
        fail("mmap");
    ring2.base = base;
    pthread_t writer;
    pthread_create(&writer, NULL, write_ring, NULL);
    double started = now();
    uint64_t received = 0, parsed = 0, total = 0;
    for (;;) {
        pthread_mutex_lock(&ring2.lock);
        while (received - ring2.released + RING_READ > RING || ring2.pushed - ring2.popped == 64)
            pthread_cond_wait(&ring2.changed, &ring2.lock);
        pthread_mutex_unlock(&ring2.lock);
        ssize_t n = recv(connection, base + received % RING, RING_READ, 0);
        if (n < 0) fail("recv");
        if (n == 0) break;
        received += (uint64_t)n;
        while (received - parsed >= 10) {
            unsigned char *frame = base + parsed % RING;
            uint64_t length = payload_length(frame);
            if (length > RING - RING_READ - 14) {
                fprintf(stderr, "frame too large\n");
                return 1;
            }
            if (received - parsed < 14 + length) break;
            unsigned char *tail = frame + 10 + length;
            uint32_t carried = carried_crc(tail);
            uint32_t crc = crc32(0, frame, (uInt)(10 + (ring2.split ? length / 2 : length)));
            if (!ring2.split && crc != carried) {
                fprintf(stderr, "bad CRC\n");
                return 1;
            }
            pthread_mutex_lock(&ring2.lock);
            uint64_t *entry = ring2.queued[ring2.pushed % 64];
            entry[0] = parsed + 10;
            entry[1] = length;
            entry[2] = parsed + 14 + length;
            entry[3] = crc;
            entry[4] = carried;
            ring2.pushed++;
            pthread_cond_signal(&ring2.changed);
            pthread_mutex_unlock(&ring2.lock);
            parsed += 14 + length;
            total += length;
        }
    }
    pthread_mutex_lock(&ring2.lock);
    ring2.finished = 1;
    pthread_cond_signal(&ring2.changed);
    pthread_mutex_unlock(&ring2.lock);
    pthread_join(writer, NULL);
    close(ring2.file);
    report(ring2.split ? "ring receiver, CRC split" : "ring receiver", started, total);
    return 0;
}

static int send_file(int port, const char *source, size_t chunk, const char *mode) {
    int file = open(source, O_RDONLY);
    if (file < 0) fail("open");
    struct stat info;
    fstat(file, &info);
    uint64_t size = (uint64_t)info.st_size;
    unsigned char *buffer = malloc(chunk);
    // `cached` sends as ferryd does for a file it has sent before: the chunks' CRCs known (ChunkChecksums), only
    // `sendfile` left. They are computed here, before the clock starts.
    int cached = strcmp(mode, "cached") == 0;
    uint32_t *crcs = NULL;
    if (cached) {
        crcs = malloc(sizeof *crcs * (size / chunk + 1));
        for (uint64_t offset = 0, i = 0; offset < size; offset += chunk, i++) {
            size_t length = size - offset < chunk ? (size_t)(size - offset) : chunk;
            unsigned char head[10];
            header(head, length);
            if (pread(file, buffer, length, (off_t)offset) != (ssize_t)length) fail("pread");
            crcs[i] = (uint32_t)crc32(crc32(0, head, sizeof head), buffer, (uInt)length);
        }
    }
    int connection = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    for (int attempt = 0; connect(connection, (struct sockaddr *)&address, sizeof address) != 0; attempt++) {
        if (attempt > 200) fail("connect");
        usleep(10000);
    }
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
        if (cached) {
            trailer(tail, crcs[offset / chunk]);
        } else if (mapped) {
            bytes = mapped + offset;
        } else if (pread(file, buffer, length, (off_t)offset) != (ssize_t)length) {
            fail("pread");
        }
        if (!cached) trailer(tail, (uint32_t)crc32(crc32(0, head, sizeof head), bytes, (uInt)length));
        if (cached || strcmp(mode, "sendfile") == 0) {
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
    if (argc == 4 && strcmp(argv[1], "receive-threaded") == 0) return receive_threaded(atoi(argv[2]), argv[3]);
    if (argc == 4 && strcmp(argv[1], "receive-ring") == 0) return receive_ring(atoi(argv[2]), argv[3]);
    if (argc == 4 && strcmp(argv[1], "receive-ring-split") == 0) {
        ring2.split = 1;
        return receive_ring(atoi(argv[2]), argv[3]);
    }
    if (argc == 6 && strcmp(argv[1], "send") == 0) return send_file(atoi(argv[2]), argv[3], (size_t)atol(argv[4]), argv[5]);
    fprintf(stderr, "usage: upload-floor receive PORT DESTINATION | send PORT SOURCE CHUNK read|mmap|sendfile\n");
    return 2;
}
