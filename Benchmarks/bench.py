#!/usr/bin/env python3
"""Ferry against the seed, vsftpd and pyftpdlib: same machine, same run, interleaved, medians.

Run through Benchmarks/run.sh, which installs the peers and builds Ferry. Each measurement runs every system in
turn (A B C D, A B C D, ...) `--rounds` times and reports medians; only ratios from one run mean anything on a
shared machine. Every client writes what it downloads to a file on the same filesystem as the server's library.
"""
import argparse, hashlib, json, mmap, os, platform, resource, shutil, signal, socket, statistics, struct, subprocess, sys
import tempfile, threading, time, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def run(args, cwd=None, stdin=None, check=True):
    result = subprocess.run(args, cwd=cwd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))}… failed: {result.stderr.decode(errors='replace')[-300:]}")
    return result


def process_tree(pid):
    """A process and all its descendants (vsftpd forks one per session), each with the fields of its /proc stat."""
    children, stats = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
                stats[int(entry)] = fields
            except OSError:
                pass
    tree, stack = {}, [pid]
    while stack:
        current = stack.pop()
        if current in stats:
            tree[current] = stats[current]
        stack += children.get(current, [])
    return tree


def tree_rss_kib(pid):
    """Resident memory of a process and all its descendants."""
    total = 0
    for current in process_tree(pid):
        try:
            with open(f"/proc/{current}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_cpu_seconds(pid):
    """User + system CPU of a process and all its descendants, including those already exited and reaped (their time
    is in their parent's cutime/cstime): a forking server's sessions count, whenever they end."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for fields in process_tree(pid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds():
    """User + system CPU of every child process this benchmark has waited for so far (the clients it ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class PeakSampler:
    """Samples a process tree's RSS every 20 ms while a block runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0, True

    def __enter__(self):
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        return self

    def loop(self):
        while self.running:
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, tree_rss_kib(self.pid))


# MARK: - Systems

class System:
    name = "?"

    def __init__(self, work):
        self.library = os.path.join(work, self.name, "library")
        self.client = os.path.join(work, self.name, "client")
        os.makedirs(self.library)
        os.makedirs(self.client)
        os.chmod(self.library, 0o777)
        self.port = free_port()
        self.process = None

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def pid(self):
        return self.process.pid

    def settle(self):
        """Called after each measured transfer, outside its timing: leaves the server as the next one should find it."""

    def clear_client(self):
        shutil.rmtree(self.client)
        os.makedirs(self.client)


class Ferry(System):
    name = "ferry"

    def __init__(self, work, bin_dir):
        super().__init__(work)
        self.bin = bin_dir
        self.process = subprocess.Popen(
            [os.path.join(bin_dir, "ferryd"), "--root", self.library, "--host", "127.0.0.1", "--port",
             str(self.port), "--log-level", "error",
             # Every benchmark client comes from 127.0.0.1: the per-address limit (64) would turn sessions away.
             "--max-connections-per-address", "4096"], stdout=subprocess.DEVNULL)
        wait_for_port(self.port)

    def ferry(self, *args, cwd=None):
        return run([os.path.join(self.bin, "ferry")] + list(args) + ["--port", str(self.port)], cwd=cwd)

    def retr(self, name):
        self.ferry("get", name, "--output", os.path.join(self.client, name), "--force")

    def stor(self, path):
        self.ferry("put", path, "--overwrite")

    def get_many(self, names):
        # Like `lftp mirror`: the whole library (here, exactly these names), listing included.
        self.ferry("get", "--all", "--output", self.client, "--force")

    def put_many(self, paths):
        # Like `lftp mirror -R`: the folder that holds them.
        self.ferry("put", os.path.dirname(paths[0]), "--overwrite")

    def list(self):
        with open(os.path.join(self.client, "listing"), "wb") as out:
            subprocess.run([os.path.join(self.bin, "ferry"), "list", "--port", str(self.port)], stdout=out, check=True)

    def session(self, name):
        return FerrySession(self.port, name, self.client)


class FTPPeer(System):
    """An FTP server driven with curl (single transfers) and lftp (many files), as issue 5 prescribes."""

    def url(self, path=""):
        return f"ftp://127.0.0.1:{self.port}/{path}"

    def retr(self, name):
        run(["curl", "-s", "-S", "-o", os.path.join(self.client, name), self.url(name)])

    def stor(self, path):
        run(["curl", "-s", "-S", "-T", path, self.url(os.path.basename(path))])

    def lftp(self, command):
        run(["lftp", "-c", f"set net:max-retries 1; set xfer:clobber on; open {self.url()}; {command}"])

    def get_many(self, names):
        # Relative paths: the benchmark's vsftpd runs as the launching user, without chroot, in its library.
        self.lftp(f"mirror --no-perms --parallel=1 . {self.client}/mirror")

    def put_many(self, paths):
        directory = os.path.dirname(paths[0])
        self.lftp(f"mirror -R --no-perms --parallel=1 {directory} .")

    def list(self):
        run(["curl", "-s", "-S", "-o", os.path.join(self.client, "listing"), self.url()])

    def session(self, name):
        return FTPSession(self.port, name, self.client)


def vsftpd_config(address, port, library, pasv_address, pasv_min, pasv_max, empty):
    """vsftpd serving `library` to anonymous users who may upload, in the foreground, as the launching user: its
    passive sockets bound on the control connection's address, at ports pasv_min to pasv_max, announced as
    `pasv_address`."""
    return f"""listen=YES
listen_ipv6=NO
listen_address={address}
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
anon_root={library}
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
pasv_enable=YES
pasv_address={pasv_address}
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
max_clients=5000
max_per_ip=5000
seccomp_sandbox=NO
run_as_launching_user=YES
xferlog_enable=NO
secure_chroot_dir={empty}
"""


class Vsftpd(FTPPeer):
    name = "vsftpd"

    def __init__(self, work):
        super().__init__(work)
        empty = os.path.join(work, "vsftpd-empty")
        os.makedirs(empty, exist_ok=True)
        config = os.path.join(work, "vsftpd.conf")
        pasv = 30000 + (self.port % 20) * 1000
        with open(config, "w") as f:
            f.write(vsftpd_config("127.0.0.1", self.port, self.library, "127.0.0.1", pasv, pasv + 999, empty))
        self.process = subprocess.Popen(["vsftpd", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


class Pyftpdlib(FTPPeer):
    name = "pyftpdlib"

    def __init__(self, work):
        super().__init__(work)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(self.port), "-w", "-d", self.library],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)


class Seed(System):
    """The teaching example: one transfer per client process; its STOR is done when the server has every byte."""
    name = "seed"

    def __init__(self, work, seed_dir):
        super().__init__(work)
        self.seed_dir = seed_dir
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(self.seed_dir, "seed_server.py"), str(self.port), self.library + "/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def settle(self):
        """A new server on a new port. An upload whose `##` arrived joined to other bytes, or never, leaves the seed's
        thread calling `recv` on the closed connection for ever: one busy core for the rest of the run, which made every
        later transfer of every system slower (Ferry's bulk RETR fell from about 1,900 MB/s in a run's first round to
        1,100–1,400 in the next ones, and the seed's own CPU per GiB counted its earlier uploads' spinning)."""
        self.stop()
        self.port = free_port()
        self.start()

    def client_run(self, commands):
        run([sys.executable, os.path.join(self.seed_dir, "seed_client.py"), str(self.port)], cwd=self.client,
            stdin=commands.encode(), check=False)

    def retr(self, name):
        self.client_run(f"get {name}\nexit\n")

    def stor(self, path):
        target = os.path.join(self.library, os.path.basename(path))
        if os.path.exists(target):
            os.remove(target)  # the seed refuses existing names
        size = os.path.getsize(path)
        started = time.time()
        self.client_run(f"put {path}\nexit\n")
        # Done when the server has written every byte, or (the seed loses tails) when the file stops growing.
        last_size, last_change = -1, time.time()
        while True:
            current = os.path.getsize(target) if os.path.exists(target) else -1
            if current != last_size:
                last_size, last_change = current, time.time()
            if current >= size or time.time() - last_change > 1:
                break
            time.sleep(0.005)
        if last_size != size:
            self.lost_bytes = getattr(self, "lost_bytes", 0) + size - max(last_size, 0)
        return last_change - started

    def list(self):
        self.client_run("list\nexit\n")


# MARK: - Concurrent sessions

def _zlib_crc32_combine():
    """zlib's crc32_combine(), which Python's zlib module does not offer, through ctypes."""
    import ctypes, ctypes.util
    library = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1")
    library.crc32_combine.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long]
    library.crc32_combine.restype = ctypes.c_ulong
    return library.crc32_combine


crc32_combine = _zlib_crc32_combine()


class FerrySession:
    """A minimal Ferry client (SPEC.md) for the many-sessions test: connect and handshake, then RETR on demand.

    It receives as Ferry's own client does: file data is written as it arrives, and one pass of zlib over each
    piece serves both checks (each frame's CRC-32 is the header's combined with the payload's, and the payloads'
    CRC-32s combine into the whole file's). Pieces are received with `recv` of up to 1 MiB, so a frame costs a few
    calls and no zero-filled buffer; that took 200 sessions from 0.33 to 0.27 s here against the same server (the
    FTP side keeps ftplib's `retrbinary` with 64 KiB blocks, its faster setting: 0.30 s, and 0.33 s with 1 MiB).
    """

    RECEIVE_SIZE = 1 << 20

    def __init__(self, port, name, directory):
        self.port, self.name, self.directory = port, name, directory
        self.longest_wait = 0

    @staticmethod
    def frame(kind, payload):
        header = struct.pack(">BBQ", kind, 0, len(payload))
        return header + payload + struct.pack(">I", zlib.crc32(header + payload))

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        hello = struct.pack(">HHQQ", 1, 1, 1 << 20, (1 << 64) - 1)
        self.sock.sendall(b"\x89FERRY\r\n" + self.frame(0x01, hello))
        if self.read(8) != b"\x89FERRY\r\n":
            raise RuntimeError("no magic")
        kind, _ = self.next_frame()
        if kind != 0x01:
            raise RuntimeError(f"server answered {kind:#x} instead of HELLO")

    def receive(self, count):
        """Up to `count` bytes, timing the wait for them (a wait over 1 s is a stall)."""
        started = time.time()
        piece = self.sock.recv(count)
        self.longest_wait = max(self.longest_wait, time.time() - started)
        if not piece:
            raise RuntimeError("connection closed")
        return piece

    def read(self, count):
        """Exactly `count` bytes: headers, trailers, short payloads."""
        out = bytearray()
        while len(out) < count:
            out += self.receive(count - len(out))
        return out

    def next_frame(self):
        return self.rest_of_frame(self.read(10))

    def rest_of_frame(self, header):
        """The frame whose 10-byte header was just read, checked: its type and payload."""
        kind, _, length = struct.unpack(">BBQ", header)
        payload = self.read(length)
        (crc,) = struct.unpack(">I", self.read(4))
        if crc != zlib.crc32(payload, zlib.crc32(header)):
            raise RuntimeError("bad CRC")
        return kind, payload

    def transfer(self):
        name = self.name.encode()
        self.sock.sendall(self.frame(0x11, struct.pack(">QH", 0, len(name)) + name))
        kind, _ = self.next_frame()
        if kind != 0x24:
            raise RuntimeError(f"RETR answered {kind:#x}")
        file_crc, length = 0, 0
        with open(os.path.join(self.directory, f"{self.name}.{id(self)}"), "wb") as out:
            while True:
                header = self.read(10)
                kind, _, remaining = struct.unpack(">BBQ", header)
                if kind != 0x30:
                    break
                payload_length, payload_crc = remaining, 0
                while remaining:
                    piece = self.receive(min(remaining, self.RECEIVE_SIZE))
                    payload_crc = zlib.crc32(piece, payload_crc)
                    out.write(piece)
                    remaining -= len(piece)
                (crc,) = struct.unpack(">I", self.read(4))
                if crc != crc32_combine(zlib.crc32(header), payload_crc, payload_length):
                    raise RuntimeError("bad CRC")
                file_crc = crc32_combine(file_crc, payload_crc, payload_length)
                length += payload_length
        kind, end = self.rest_of_frame(header)
        if kind != 0x31:
            raise RuntimeError(f"unexpected frame {kind:#x}")
        if struct.unpack(">QI", end) != (length, file_crc):
            raise RuntimeError("whole-file check failed")
        self.sock.close()


class FTPSession:
    def __init__(self, port, name, directory):
        self.port, self.name, self.directory = port, name, directory

    def connect(self):
        import ftplib
        self.ftp = ftplib.FTP()
        self.ftp.connect("127.0.0.1", self.port, timeout=60)
        self.ftp.login()

    def transfer(self):
        self.longest_wait = 0
        last = [time.time()]
        with open(os.path.join(self.directory, f"{self.name}.{id(self)}"), "wb") as out:
            def write(block):
                now = time.time()
                self.longest_wait = max(self.longest_wait, now - last[0])
                last[0] = now
                out.write(block)
            self.ftp.retrbinary(f"RETR {self.name}", write, blocksize=1 << 16)
        self.ftp.quit()


def concurrent_sessions(system, count, name):
    """All sessions connect first, then all transfer at once: wall time, failures, stalls over 1 s, peak RSS."""
    sessions = [system.session(name) for _ in range(count)]
    failures, stalls = [0], [0]
    lock = threading.Lock()
    connected = threading.Barrier(count + 1)
    finished = threading.Barrier(count + 1)

    def worker(session):
        ok = True
        try:
            session.connect()
        except Exception:
            ok = False
        try:
            connected.wait(120)
        except threading.BrokenBarrierError:
            pass
        if ok:
            try:
                session.transfer()
                if getattr(session, "longest_wait", 0) > 1:
                    with lock:
                        stalls[0] += 1
            except Exception:
                ok = False
        if not ok:
            with lock:
                failures[0] += 1
        try:
            finished.wait(300)
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in sessions]
    with PeakSampler(system.pid) as sampler:
        for t in threads:
            t.start()
        connected.wait(120)
        started = time.time()
        finished.wait(300)
        wall = time.time() - started
    system.clear_client()
    return {"wall_s": wall, "failures": failures[0], "stalls": stalls[0], "peak_rss_mib": sampler.peak / 1024}


# MARK: - Measurements

def timed(action):
    """Seconds the action took (or the duration it reports itself, when completion is not its return)."""
    started = time.time()
    reported = action()
    return reported if isinstance(reported, float) else time.time() - started


def warm_free_memory(size):
    """Touches `size` bytes of fresh memory and frees them, just before a timed transfer that needs new page cache.

    On a virtual machine whose guest reports free memory to the host (virtio-balloon free page reporting, as on the
    Firecracker VMs this was built on), memory that stayed free for a couple of seconds is handed back, and the
    next write into it waits for the host to supply it again: writing 1 GiB into such memory took 0.6 to 2.8 s here
    where recently used memory took 0.4 s, and which transfer met which memory depended on how long the previous
    one took. Touched just before (and freed, so the kernel hands the same pages out next), the memory every system
    writes into is equally ready. Costs a few seconds per call; harmless on bare metal.
    """
    size = min(size, available_memory() // 2)
    if size <= 0:
        return
    populate = getattr(mmap, "MAP_POPULATE", 0)
    with mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate) as memory:
        if not populate:
            for offset in range(0, size, mmap.PAGESIZE):
                memory[offset] = 1


def available_memory():
    """MemAvailable from /proc/meminfo, in bytes (0 where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_file(path, size):
    with open(path, "wb") as out:
        remaining = size
        block = os.urandom(min(size, 4 * MiB)) if size else b""
        while remaining > 0:
            out.write(block[:remaining])
            remaining -= len(block[:remaining])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seed", default=os.path.join(ROOT, "..", "shared", "seed"))
    parser.add_argument("--base", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    parser.add_argument("--label", default="tmpfs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--list-entries", type=int, default=10000)
    parser.add_argument("--sessions", default="200,1000")
    parser.add_argument("--memory-gib", type=int, default=4)
    parser.add_argument("--raw", default=os.path.join(HERE, "results", "latest.json"))
    parser.add_argument("--only", default="bulk,small,list,sessions,memory",
                        help="comma-separated measurements to run (a quicker look at one of them)")
    args = parser.parse_args()
    args.only = set(args.only.split(","))

    work = tempfile.mkdtemp(prefix="ferry-bench-", dir=args.base)
    systems = []
    try:
        systems.append(Ferry(work, args.bin))
        if os.path.exists(os.path.join(args.seed, "seed_server.py")):
            systems.append(Seed(work, os.path.abspath(args.seed)))
        else:
            print(f"note: no seed at {args.seed}; skipped", file=sys.stderr)
        systems.append(Vsftpd(work))
        systems.append(Pyftpdlib(work))
        results = measure(systems, work, args)
    finally:
        stop_all(systems, work)
    save(results, args.raw)
    report(results)


def stop_all(systems, work):
    """Stops every server a run started and removes its work folder."""
    for system in systems:
        system.stop()
    shutil.rmtree(work, ignore_errors=True)


def save(results, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)


def measure(systems, work, args):
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
               "filesystem": args.label, "rounds": args.rounds, "raw": {}}
    raw = results["raw"]

    def record(measurement, system, value):
        raw.setdefault(measurement, {}).setdefault(system.name, []).append(value)

    source = os.path.join(work, "source")
    os.makedirs(source)

    # 1. Bulk.
    if "bulk" in args.only:
        measure_bulk(systems, source, args, record)
    if "small" in args.only:
        measure_small_files(systems, source, args, record)
    if "list" in args.only:
        measure_listing(systems, args, record)
    if "sessions" in args.only:
        measure_sessions(systems, args, record)
    if "memory" in args.only:
        measure_memory(systems, source, args, record)

    # 6. This machine's limits.
    results["limits"] = machine_limits(args.bin)
    for system in systems:
        if getattr(system, "lost_bytes", 0):
            results.setdefault("notes", []).append(
                f"{system.name} lost {system.lost_bytes} bytes in its uploads (files shorter than sent)")
    return results


def measure_bulk(systems, source, args, record):
    bulk = os.path.join(source, "bulk.bin")
    make_file(bulk, args.bulk_mib * MiB)
    gib = args.bulk_mib * MiB / (1 << 30)

    def transfer(system, kind, action):
        """Times one transfer and records its speed and the CPU per GiB both ends spent on it: on two shared cores,
        CPU is what carries over to a bigger machine, where wall time would not."""
        warm_free_memory(args.bulk_mib * MiB * 3 // 2)
        server, client = tree_cpu_seconds(system.pid), client_cpu_seconds()
        seconds = timed(action)
        time.sleep(0.2)  # a forking server's session process ends and is reaped
        record(f"bulk {kind} MB/s", system, args.bulk_mib * MiB / seconds / 1e6)
        record(f"bulk {kind} server CPU s/GiB", system, (tree_cpu_seconds(system.pid) - server) / gib)
        record(f"bulk {kind} client CPU s/GiB", system, (client_cpu_seconds() - client) / gib)
        system.settle()

    for _ in range(args.rounds):
        for system in systems:
            transfer(system, "STOR", lambda: system.stor(bulk))
            transfer(system, "RETR", lambda: system.retr("bulk.bin"))
            system.clear_client()
            os.remove(os.path.join(system.library, "bulk.bin"))
    os.remove(bulk)


def measure_small_files(systems, source, args, record):
    """Small files, one session each way (the seed's protocol cannot carry back-to-back transfers: skipped)."""
    small_dir = os.path.join(source, "small")
    os.makedirs(small_dir)
    names = [f"f{i:05d}" for i in range(args.small_files)]
    for name in names:
        with open(os.path.join(small_dir, name), "wb") as f:
            f.write(os.urandom(4096))
    paths = [os.path.join(small_dir, name) for name in names]
    peers = [s for s in systems if hasattr(s, "get_many")]
    for _ in range(args.rounds):
        for system in peers:
            for name in names:
                try:
                    os.remove(os.path.join(system.library, name))
                except FileNotFoundError:
                    pass
            record("small files STOR files/s", system, len(names) / timed(lambda: system.put_many(paths)))
            record("small files RETR files/s", system, len(names) / timed(lambda: system.get_many(names)))
            system.clear_client()
    for system in peers:
        for name in names:
            os.remove(os.path.join(system.library, name))
    shutil.rmtree(small_dir)


def measure_listing(systems, args, record):
    for system in systems:
        for i in range(args.list_entries):
            open(os.path.join(system.library, f"entry-{i:06d}.txt"), "wb").close()
    for _ in range(args.rounds):
        for system in systems:
            record(f"LIST {args.list_entries} ms", system, timed(system.list) * 1000)
    for system in systems:
        for i in range(args.list_entries):
            os.remove(os.path.join(system.library, f"entry-{i:06d}.txt"))


def measure_sessions(systems, args, record):
    """Ferry and the FTP servers; the seed's one-thread-per-client server is skipped."""
    peers = [s for s in systems if hasattr(s, "get_many")]
    for system in peers:
        make_file(os.path.join(system.library, "one.bin"), MiB)
    for count in [int(c) for c in args.sessions.split(",") if c]:
        for _ in range(args.rounds):
            for system in peers:
                warm_free_memory(count * MiB * 3 // 2)
                outcome = concurrent_sessions(system, count, "one.bin")
                for key, value in outcome.items():
                    record(f"{count} sessions {key}", system, value)


def measure_memory(systems, source, args, record):
    """Memory while moving a large file (STOR then RETR), against idle."""
    big = os.path.join(source, "big.bin")
    make_file(big, args.memory_gib << 30)
    for system in systems:
        idle = tree_rss_kib(system.pid)
        with PeakSampler(system.pid) as sampler:
            system.stor(big)
            system.retr("big.bin")
        record(f"RSS growth moving {args.memory_gib} GiB MiB", system, (sampler.peak - idle) / 1024)
        system.settle()
        system.clear_client()
        os.remove(os.path.join(system.library, "big.bin"))
    os.remove(big)


def machine_limits(bin_dir):
    limits = {}
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "5299"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        out = run(["iperf3", "-c", "127.0.0.1", "-p", "5299", "-t", "3", "-J"]).stdout
        limits["iperf3 loopback GB/s"] = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8e9
    except Exception as error:
        limits["iperf3 loopback GB/s"] = f"failed: {error}"
    finally:
        server.wait(10)
    out = run([os.path.join(bin_dir, "CodecBenchmark"), "--total", "1024", "--rounds", "3"]).stdout.decode()
    for line in out.splitlines():
        if line.startswith("| zlib crc32() alone"):
            limits["zlib crc32 GB/s"] = float(line.split("|")[2])
    return limits


def did_the_work(raw, measurement, name):
    """A session count's wall time and memory count only for a system that served every session without a stall:
    refusing half the clients, or leaving them waiting, makes for a short wall time that did not do the work."""
    if " sessions " not in measurement or measurement.endswith(("failures", "stalls")):
        return True
    count = measurement.split(" sessions ")[0]
    return all(statistics.median(raw.get(f"{count} sessions {kind}", {}).get(name, [0])) == 0
               for kind in ("failures", "stalls"))


def report(results):
    raw = results["raw"]
    print(f"\nFilesystem: {results['filesystem']}; {results['machine']}; medians of {results['rounds']} interleaved rounds\n")
    systems = ["ferry", "seed", "vsftpd", "pyftpdlib"]
    print("| measurement | " + " | ".join(systems) + " | ferry vs best peer |")
    print("|---|" + "---:|" * (len(systems) + 1))
    for measurement, values in raw.items():
        medians = {name: statistics.median(v) for name, v in values.items()}
        lower_is_better = any(word in measurement for word in [" ms", "wall_s", "failures", "stalls", "rss", "RSS", "CPU"])
        peers = [v for name, v in medians.items() if name != "ferry" and did_the_work(raw, measurement, name)]
        ratio = ""
        if "ferry" in medians and not peers and did_the_work(raw, measurement, "ferry"):
            ratio = "only one without failures or stalls"
        elif "ferry" in medians and peers:
            best = min(peers) if lower_is_better else max(peers)
            if lower_is_better and medians["ferry"] <= best and medians["ferry"] < 0.05:
                ratio = "best"
            elif best > 0.05:
                ratio = f"{medians['ferry'] / best:.2f}×"
            elif lower_is_better and medians["ferry"] <= best:
                ratio = "best"
        digits = 2 if "CPU" in measurement else 1
        cells = [f"{medians[name]:.{digits}f}" if name in medians else "—" for name in systems]
        print(f"| {measurement} | " + " | ".join(cells) + f" | {ratio} |")
    for note in results.get("notes", []):
        print(f"\nnote: {note}", end="")
    for key, value in results.get("limits", {}).items():
        print(f"\n{key}: {value if isinstance(value, str) else f'{value:.2f}'}", end="")
    print("\nRatios for simultaneous sessions compare with the peers that served every session without a stall.")


if __name__ == "__main__":
    main()
