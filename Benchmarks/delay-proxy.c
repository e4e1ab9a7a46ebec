/*
 * delay-proxy: a TCP forwarder that adds a fixed one-way delay, for latency benchmarks on loopback.
 *
 *   gcc -O2 -Wall -Wextra -o delay-proxy delay-proxy.c
 *   delay-proxy --delay-ms D [--listen 127.0.0.1:PORT --to 127.0.0.2:PORT]... [--range 127.0.0.1:A-B=127.0.0.2]...
 *               [--cap-mib N] [--no-handshake]
 *
 * Every byte read from one side at time t is written to the other side at t + D, in order, in each direction
 * (so a request and its answer cost a round trip of 2 D). A FIN is forwarded like data: D later, once every byte
 * before it is written, the other side gets shutdown(SHUT_WR). A reset (or an error) on one side resets the other
 * side D later, after the bytes read before it. `--range` listens on every port A..B of the first address and
 * forwards each to the same port on the second (FTP passive data ports).
 *
 * The TCP handshake: the proxy's listening socket completes a client's connect() at once, which would hide the
 * round trip a real connection costs before its first byte. So, unless --no-handshake is given, the proxy connects
 * to the server 3 D after accepting (the SYN's D plus the SYN-ACK and ACK's 2 D): the server accepts when it would
 * over a real path, a server that speaks first is heard 4 D after the client's connect(), and a client's first
 * bytes arrive at 3 D at the earliest, as over a real path.
 *
 * No bandwidth limit of its own: it reads in 256 KiB pieces as fast as the sockets give them. Each direction
 * buffers at most --cap-mib (64 MiB by default) of bytes not yet written; when that is reached the proxy stops
 * reading that side until the queue drains below it, so a fast sender then waits on TCP flow control. Note that
 * the proxy acknowledges bytes at once (it is a split connection), so TCP's windows and congestion control see a
 * loopback path, not one with round trip 2 D: bulk throughput is bounded by the cap / D, not by the socket
 * buffers over 2 D as on a real long path.
 *
 * One thread, nonblocking sockets, epoll, a timerfd for the due times and a signalfd for SIGTERM/SIGINT (exit 0).
 * TCP_NODELAY on both sides. Prints "ready" on stdout once every listening socket is bound.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (256 * 1024)
#define READS_PER_EVENT 4
#define COPY_BELOW (16 * 1024)

enum { H_LISTENER, H_SIDE, H_TIMER, H_SIGNAL };
enum { C_DATA, C_FIN, C_RST };

typedef struct handler {
    int type;
} handler;

typedef struct listener {
    handler h;
    int fd;
    struct sockaddr_in target;
} listener;

typedef struct chunk {
    struct chunk *next;
    int64_t due;
    size_t len, off;
    int kind;
    char data[];
} chunk;

/* Bytes read from side `i` and not yet written to side `1 - i`. */
typedef struct direction {
    chunk *head, *tail;
    size_t queued;   /* data bytes held */
    int read_eof;    /* nothing more is read from the source (FIN, reset or error seen) */
    int blocked;     /* the destination's send buffer is full: waiting for EPOLLOUT */
    int done;        /* the FIN was forwarded */
} direction;

typedef struct conn conn;

typedef struct side {
    handler h;
    conn *c;
    int i;
} side;

struct conn {
    int fd[2];            /* 0: the accepted client, 1: the connection to the server */
    side s[2];
    direction d[2];       /* d[i]: read from fd[i], written to fd[1 - i] */
    uint32_t interest[2]; /* events registered for fd[i]; (uint32_t)-1 when not in epoll */
    int parked[2];        /* fd[i] left epoll while its reading is paused, for its EPOLLHUP would not stop */
    int connecting, connected, dead, refs;
    struct sockaddr_in target;
    conn *next_dead;
};

/* Due times: every delay is the same for all connections, so events of one kind come due in the order they were
 * queued, and a FIFO per kind is a priority queue. */
typedef struct event {
    struct event *next;
    int64_t due;
    conn *c;
    int what; /* 0 or 1: flush that direction; 2: connect to the server */
} event;

typedef struct fifo {
    event *head, *tail;
} fifo;

static int epfd, timerfd_, sigfd;
static int64_t delay_ns, connect_delay_ns, armed_for = -1;
static size_t cap_bytes = (size_t)64 << 20;
static fifo flushes, connects;
static conn *graveyard; /* closed connections, freed between loop iterations once no event refers to them */
static chunk *spare; /* the buffer the next read goes into */
static handler timer_handler = {H_TIMER}, signal_handler = {H_SIGNAL};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *xmalloc(size_t size) {
    void *p = malloc(size);
    if (!p) die("malloc");
    return p;
}

static void push_event(fifo *q, int64_t due, conn *c, int what) {
    event *e = xmalloc(sizeof *e);
    e->next = NULL;
    e->due = due;
    e->c = c;
    e->what = what;
    c->refs++;
    if (q->tail) q->tail->next = e;
    else q->head = e;
    q->tail = e;
}

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void free_chunks(direction *d) {
    while (d->head) {
        chunk *next = d->head->next;
        free(d->head);
        d->head = next;
    }
    d->tail = NULL;
    d->queued = 0;
}

/* Closes both sides (abortively when `reset`) and frees the queues; the struct lives until no event refers to it. */
static void kill_conn(conn *c, int reset) {
    if (c->dead) return;
    for (int i = 0; i < 2; i++) {
        if (c->fd[i] >= 0) {
            if (reset) {
                struct linger l = {1, 0};
                setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &l, sizeof l);
            }
            close(c->fd[i]); /* also leaves epoll */
            c->fd[i] = -1;
        }
        free_chunks(&c->d[i]);
    }
    c->dead = 1;
    c->next_dead = graveyard;
    graveyard = c;
}

static void sweep(void) {
    for (conn **p = &graveyard; *p;) {
        conn *c = *p;
        if (c->refs == 0) {
            *p = c->next_dead;
            free(c);
        } else p = &c->next_dead;
    }
}

/* Registers what fd[i] should wake us for: reading while allowed, writing while blocked or connecting. Once a side
 * has nothing left to read or write it leaves epoll, or its EPOLLHUP would wake us again and again. */
static void update_interest(conn *c, int i) {
    if (c->dead || c->fd[i] < 0) return;
    direction *in = &c->d[i], *out = &c->d[1 - i];
    uint32_t want = 0;
    if (i == 1 && c->connecting) want = EPOLLOUT;
    else {
        if (!in->read_eof && in->queued < cap_bytes) want |= EPOLLIN;
        if (out->blocked) want |= EPOLLOUT;
    }
    if (want == 0 && ((in->read_eof && out->done) || c->parked[i])) {
        if (c->interest[i] != (uint32_t)-1) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd[i], NULL);
            c->interest[i] = (uint32_t)-1;
        }
        return;
    }
    c->parked[i] = 0;
    if (want == c->interest[i]) return;
    struct epoll_event ev = {.events = want, .data.ptr = &c->s[i]};
    int op = c->interest[i] == (uint32_t)-1 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(epfd, op, c->fd[i], &ev) < 0) die("epoll_ctl");
    c->interest[i] = want;
}

static void reset_from(conn *c, int i);

static void maybe_finish(conn *c) {
    if (!c->dead && c->d[0].done && c->d[1].done && !c->d[0].head && !c->d[1].head) kill_conn(c, 0);
}

/* Writes what is due of direction i to fd[1 - i]. */
static void flush(conn *c, int i) {
    if (c->dead || !c->connected) return;
    direction *d = &c->d[i];
    int out = c->fd[1 - i];
    int64_t now = now_ns();
    d->blocked = 0;
    while (d->head && d->head->due <= now) {
        chunk *ch = d->head;
        if (ch->kind == C_DATA) {
            ssize_t n = send(out, ch->data + ch->off, ch->len - ch->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    d->blocked = 1;
                    break;
                }
                if (errno == EINTR) continue;
                reset_from(c, 1 - i);
                return;
            }
            ch->off += (size_t)n;
            d->queued -= (size_t)n;
            if (ch->off < ch->len) continue;
        } else if (ch->kind == C_FIN) {
            shutdown(out, SHUT_WR);
            d->done = 1;
        } else {
            kill_conn(c, 1);
            return;
        }
        d->head = ch->next;
        if (!d->head) d->tail = NULL;
        free(ch);
    }
    update_interest(c, 1 - i);
    update_interest(c, i); /* reading may resume below the cap */
    maybe_finish(c);
}

/* Queues `ch` (its bytes from ch->off on) to be written at its due time. */
static void enqueue_chunk(conn *c, int i, chunk *ch) {
    direction *d = &c->d[i];
    ch->next = NULL;
    d->queued += ch->len - ch->off;
    if (d->tail) d->tail->next = ch;
    else d->head = ch;
    d->tail = ch;
    if (delay_ns > 0) push_event(&flushes, ch->due, c, i);
    else flush(c, i);
}

static void enqueue(conn *c, int i, int kind, int64_t due) {
    chunk *ch = xmalloc(sizeof *ch);
    ch->due = due;
    ch->len = ch->off = 0;
    ch->kind = kind;
    enqueue_chunk(c, i, ch);
}

/* Side i was reset or failed: what the other side sent toward it is lost (the proxy stops reading the other side),
 * and the other side is reset D later, after the bytes side i sent before. */
static void reset_from(conn *c, int i) {
    if (c->dead) return;
    if (!c->connected || c->fd[1 - i] < 0) {
        kill_conn(c, 1);
        return;
    }
    direction *in = &c->d[i], *toward = &c->d[1 - i];
    free_chunks(toward);
    toward->read_eof = 1;
    toward->done = 1;
    toward->blocked = 0;
    close(c->fd[i]); /* also leaves epoll */
    c->fd[i] = -1;
    c->interest[i] = (uint32_t)-1;
    in->read_eof = 1;
    enqueue(c, i, C_RST, now_ns() + delay_ns);
    if (!c->dead) update_interest(c, 1 - i);
}

static void on_readable(conn *c, int i) {
    direction *d = &c->d[i];
    for (int k = 0; k < READS_PER_EVENT && !c->dead && !d->read_eof && d->queued < cap_bytes; k++) {
        /* Read into a chunk of READ_SIZE, queued as it is (shrunk in place) when it holds much; copied otherwise. */
        if (!spare) spare = xmalloc(sizeof *spare + READ_SIZE);
        ssize_t n = recv(c->fd[i], spare->data, READ_SIZE, 0);
        if (n > 0) {
            int64_t now = now_ns();
            size_t done = 0;
            if (delay_ns == 0 && c->connected && !d->head) {
                /* No delay and nothing queued: straight through, keeping only what the socket refuses. */
                ssize_t w = send(c->fd[1 - i], spare->data, (size_t)n, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                    reset_from(c, 1 - i);
                    return;
                }
                done = w > 0 ? (size_t)w : 0;
            }
            if (done < (size_t)n) {
                chunk *ch;
                if ((size_t)n - done <= COPY_BELOW) {
                    ch = xmalloc(sizeof *ch + ((size_t)n - done));
                    memcpy(ch->data, spare->data + done, (size_t)n - done);
                    ch->len = (size_t)n - done;
                    ch->off = 0;
                } else {
                    ch = (size_t)n < READ_SIZE ? realloc(spare, sizeof *ch + (size_t)n) : spare;
                    if (!ch) die("realloc");
                    spare = NULL;
                    ch->len = (size_t)n;
                    ch->off = done;
                }
                ch->due = now + delay_ns;
                ch->kind = C_DATA;
                enqueue_chunk(c, i, ch);
            }
            if ((size_t)n < READ_SIZE) break;
        } else if (n == 0) {
            d->read_eof = 1;
            enqueue(c, i, C_FIN, now_ns() + delay_ns);
            break;
        } else {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            reset_from(c, i);
            return;
        }
    }
    if (!c->dead) update_interest(c, i);
}

static void start_connect(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        kill_conn(c, 1);
        return;
    }
    set_nodelay(fd);
    c->fd[1] = fd;
    c->connecting = 1;
    if (connect(fd, (struct sockaddr *)&c->target, sizeof c->target) < 0 && errno != EINPROGRESS) {
        kill_conn(c, 1);
        return;
    }
    update_interest(c, 1);
}

static void on_connected(conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        kill_conn(c, 1); /* the server refused: reset the client */
        return;
    }
    c->connecting = 0;
    c->connected = 1;
    update_interest(c, 1);
    flush(c, 0); /* what the client sent meanwhile, as far as it is due */
}

static void on_side(side *s, uint32_t events) {
    conn *c = s->c;
    int i = s->i;
    if (c->dead || c->fd[i] < 0) return;
    if (i == 1 && c->connecting) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if (events & EPOLLERR) {
        reset_from(c, i);
        return;
    }
    if (events & EPOLLOUT) flush(c, 1 - i);
    if (c->dead) return;
    if (events & EPOLLIN) on_readable(c, i);
    if (c->dead) return;
    if ((events & EPOLLHUP) && !(events & EPOLLIN)) {
        /* Both ways shut without anything to read: read the end, unless reading is paused at the cap (then leave
         * epoll until it resumes); with bytes still owed to this side, its peer is gone. */
        if (!c->d[i].read_eof) {
            if (c->d[i].queued < cap_bytes) on_readable(c, i);
            else {
                c->parked[i] = 1;
                update_interest(c, i);
            }
        } else if (!c->d[1 - i].done) reset_from(c, i);
    }
}

static void on_accept(listener *l) {
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) perror("accept");
            return;
        }
        set_nodelay(fd);
        conn *c = xmalloc(sizeof *c);
        memset(c, 0, sizeof *c);
        c->fd[0] = fd;
        c->fd[1] = -1;
        for (int i = 0; i < 2; i++) {
            c->s[i].h.type = H_SIDE;
            c->s[i].c = c;
            c->s[i].i = i;
            c->interest[i] = (uint32_t)-1;
        }
        c->target = l->target;
        update_interest(c, 0);
        if (connect_delay_ns > 0) push_event(&connects, now_ns() + connect_delay_ns, c, 2);
        else start_connect(c);
    }
}

static void run_due_events(void) {
    for (;;) {
        fifo *q = NULL;
        if (flushes.head) q = &flushes;
        if (connects.head && (!q || connects.head->due < q->head->due)) q = &connects;
        if (!q || q->head->due > now_ns()) break;
        event *e = q->head;
        q->head = e->next;
        if (!q->head) q->tail = NULL;
        conn *c = e->c;
        if (!c->dead) {
            if (e->what == 2) start_connect(c);
            else flush(c, e->what);
        }
        free(e);
        c->refs--;
    }
}

static void arm_timer(void) {
    int64_t due = -1;
    if (flushes.head) due = flushes.head->due;
    if (connects.head && (due < 0 || connects.head->due < due)) due = connects.head->due;
    if (due == armed_for) return;
    struct itimerspec its = {0};
    if (due >= 0) {
        its.it_value.tv_sec = due / 1000000000;
        its.it_value.tv_nsec = due % 1000000000;
        if (!its.it_value.tv_sec && !its.it_value.tv_nsec) its.it_value.tv_nsec = 1;
    }
    if (timerfd_settime(timerfd_, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
    armed_for = due;
}

static int parse_addr(const char *text, struct sockaddr_in *out, int need_port) {
    char host[64];
    const char *colon = strrchr(text, ':');
    size_t hl = colon ? (size_t)(colon - text) : strlen(text);
    if (hl >= sizeof host || (need_port && !colon)) return -1;
    memcpy(host, text, hl);
    host[hl] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1) return -1;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 0 || port > 65535) return -1;
        out->sin_port = htons((uint16_t)port);
    }
    return 0;
}

static listener *listeners;
static int nlisteners, listeners_cap;

static void add_listener(struct sockaddr_in from, struct sockaddr_in to) {
    if (nlisteners == listeners_cap) {
        listeners_cap = listeners_cap ? listeners_cap * 2 : 16;
        listeners = realloc(listeners, sizeof *listeners * (size_t)listeners_cap);
        if (!listeners) die("realloc");
    }
    listener *l = &listeners[nlisteners++];
    l->h.type = H_LISTENER;
    l->target = to;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) die("socket");
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, (struct sockaddr *)&from, sizeof from) < 0) {
        char text[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &from.sin_addr, text, sizeof text);
        fprintf(stderr, "delay-proxy: bind %s:%d: %s\n", text, ntohs(from.sin_port), strerror(errno));
        exit(1);
    }
    if (listen(l->fd, 4096) < 0) die("listen");
}

static void usage(void) {
    fprintf(stderr, "usage: delay-proxy --delay-ms D [--listen HOST:PORT --to HOST:PORT]... "
                    "[--range HOST:A-B=HOST]... [--cap-mib N] [--no-handshake]\n");
    exit(2);
}

int main(int argc, char **argv) {
    double delay_ms = -1;
    int handshake = 1;
    struct sockaddr_in pending_listen;
    int have_pending = 0;
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *value = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(arg, "--no-handshake")) {
            handshake = 0;
            continue;
        }
        if (!value) usage();
        a++;
        if (!strcmp(arg, "--delay-ms")) {
            char *end;
            delay_ms = strtod(value, &end);
            if (*end || delay_ms < 0) usage();
        } else if (!strcmp(arg, "--cap-mib")) {
            long mib = strtol(value, NULL, 10);
            if (mib <= 0) usage();
            cap_bytes = (size_t)mib << 20;
        } else if (!strcmp(arg, "--listen")) {
            if (have_pending || parse_addr(value, &pending_listen, 1) < 0) usage();
            have_pending = 1;
        } else if (!strcmp(arg, "--to")) {
            struct sockaddr_in to;
            if (!have_pending || parse_addr(value, &to, 1) < 0) usage();
            add_listener(pending_listen, to);
            have_pending = 0;
        } else if (!strcmp(arg, "--range")) {
            /* HOST:A-B=HOST2 */
            char buf[128];
            if (strlen(value) >= sizeof buf) usage();
            strcpy(buf, value);
            char *eq = strchr(buf, '='), *colon = strrchr(buf, ':');
            if (!eq || !colon || colon > eq) usage();
            *eq = 0;
            *colon = 0;
            char *dash = strchr(colon + 1, '-');
            if (!dash) usage();
            long first = strtol(colon + 1, NULL, 10), last = strtol(dash + 1, NULL, 10);
            struct sockaddr_in from, to;
            if (first <= 0 || last < first || last > 65535 || parse_addr(buf, &from, 0) < 0 ||
                parse_addr(eq + 1, &to, 0) < 0)
                usage();
            for (long port = first; port <= last; port++) {
                from.sin_port = to.sin_port = htons((uint16_t)port);
                add_listener(from, to);
            }
        } else usage();
    }
    if (delay_ms < 0 || have_pending || nlisteners == 0) usage();
    delay_ns = (int64_t)(delay_ms * 1e6);
    connect_delay_ns = handshake ? 3 * delay_ns : 0;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) die("signalfd");
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
    if ((timerfd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0) die("timerfd_create");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &timer_handler};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, timerfd_, &ev) < 0) die("epoll_ctl");
    ev.data.ptr = &signal_handler;
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0) die("epoll_ctl");
    for (int k = 0; k < nlisteners; k++) {
        ev.data.ptr = &listeners[k].h;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, listeners[k].fd, &ev) < 0) die("epoll_ctl");
    }
    printf("ready\n");
    fflush(stdout);

    struct epoll_event events[256];
    for (;;) {
        arm_timer();
        int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            handler *h = events[k].data.ptr;
            if (h->type == H_LISTENER) on_accept((listener *)h);
            else if (h->type == H_SIDE) on_side((side *)h, events[k].events);
            else if (h->type == H_TIMER) {
                uint64_t expirations;
                if (read(timerfd_, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("read timerfd");
                armed_for = -1;
            } else {
                return 0; /* SIGTERM or SIGINT */
            }
        }
        run_due_events();
        sweep();
    }
}
