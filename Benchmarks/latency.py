#!/usr/bin/env python3
"""Ferry against vsftpd, pyftpdlib and sftp when round trips cost milliseconds: loopback through a delay proxy.

    python3 Benchmarks/latency.py --bin BIN_DIR     (BIN_DIR holds a release ferryd and ferry; about 15 minutes)
    python3 Benchmarks/latency.py --bin BIN_DIR --rtts 20 --rounds 2 --small-files 200 --list-entries 2000 \
        --bulk-mib 64                                 (a quick look: a minute)
    python3 Benchmarks/latency.py --bin BIN_DIR --check-proxy --parallel 8
                                                      (does the proxy keep up? delay 0 against straight to the server)

Needs gcc, vsftpd, lftp, curl and pyftpdlib (Benchmarks/run.sh installs the last four), and for sftp
openssh-server (Benchmarks/secure.sh installs it; sftp is left out without it). Every server listens on
127.0.0.2; clients connect to 127.0.0.1, where Benchmarks/delay-proxy.c (compiled by this script into a temporary
folder) forwards each port to the same port on 127.0.0.2, holding the bytes of each direction for half the round
trip, and a new connection's first bytes for its handshake's round trip (see delay-proxy.c). The FTP servers'
passive data ports (500 each) go through it too: vsftpd and pyftpdlib bind their passive sockets on the address the
control connection came to (127.0.0.2) and announce the proxy's (pasv_address=127.0.0.1; `-n 127.0.0.1`).

Workloads at each round trip (--rtts, default 2, 20 and 100 ms): 1,000 × 4 KiB files uploaded and downloaded with
one command each (`ferry put FOLDER`, `ferry get --all`; `lftp mirror -R` and `lftp mirror` with the --parallel
that was fastest for that peer and direction on a 100-file sample at 20 ms; sftp's `put *` and `get *`, on 50 of the
files: it moves them one after another, a few round trips each), a listing of 10,000 entries (`ferry list`; curl's
LIST; sftp's `ls -l`), and a 256 MiB STOR and RETR (`ferry put`/`get`; curl; sftp's `put` and `get`). sshd is
Benchmarks/secure.py's: started for the run, its own keys, public-key log-in. lftp and curl get their fastest
settings for doing what `ferry` does (LFTP_SETTINGS below; curl skips SIZE). Every system runs in turn (A B C,
A B C, ...) --rounds times (default 3) and the medians are reported, with Ferry's speed-up over the best
peer. Every transfer is checked (file count and contents; listing lines) so that a failure cannot look fast.
Markdown table on stdout; raw numbers in Benchmarks/results/latency.json.

The proxy acknowledges bytes at once, so TCP's window and slow start see loopback: the bulk figures show what the
round trips of each protocol cost, not what a long fat pipe would allow (see delay-proxy.c).
"""
import argparse, json, os, platform, random, select, shutil, signal, socket, statistics, subprocess, sys
import tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import MiB, System, make_file, save, stop_all, vsftpd_config, wait_for_port, warm_free_memory  # noqa: E402,E501
from secure import Sshd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_HOST = "127.0.0.2"   # where every server listens
PROXY_HOST = "127.0.0.1"    # where clients connect: the delay proxy
SMALL_SIZE = 4096
PASV_PORTS = 500         # passive ports per FTP server (and proxy listeners): at --parallel=32 and 50 ports, vsftpd failed to bind one (500 OOPS: vsf_sysutil_bind)
# lftp as fast as it goes here, doing what `ferry` does: it pipelines its commands (sync-mode off, lftp's setting
# for long round trips), and sets no modification times (`ferry get` and `put` keep none): an MDTM per file from
# vsftpd, whose LIST has only minutes, and a SITE UTIME per upload would each cost a round trip.
LFTP_SETTINGS = ("set net:max-retries 1; set net:timeout 30; set xfer:clobber on; set cmd:fail-exit yes; "
                 "set ftp:sync-mode off; set ftp:use-mdtm no; set ftp:use-site-utime no; set ftp:use-site-utime2 no")


def run(args, timeout, cwd=None, stdout=subprocess.PIPE):
    """Runs a client to completion within `timeout` seconds (killed past it); raises on failure."""
    try:
        result = subprocess.run(args, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))}… took over {timeout} s (killed)")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))}… failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-300:]}")
    return result


def port_is_free(port):
    for host in (PROXY_HOST, SERVER_HOST):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(count):
    """`count` consecutive ports free on both addresses, below the ephemeral range (32768 and up here), so that no
    client's or proxy's outbound connection (nor its TIME-WAIT) holds one of them, and below bench.py's vsftpd
    passive ports (30000 and up)."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - count)
        if all(port_is_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between 20000 and 30000")


def wait_for_server(port):
    wait_for_port(port, host=SERVER_HOST)


def same_contents(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def check_folder(folder, source, names):
    """Every name in `folder` with the contents it has in `source`, and nothing else (hidden entries aside)."""
    present = {n for n in os.listdir(folder) if not n.startswith(".")} if os.path.isdir(folder) else set()
    missing = [n for n in names if n not in present]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(names)} files missing in {folder} (e.g. {missing[0]})")
    for name in names:
        with open(os.path.join(folder, name), "rb") as f, open(os.path.join(source, name), "rb") as g:
            if f.read() != g.read():
                raise RuntimeError(f"{folder}/{name} differs from what was sent")
    extra = present - set(names)
    if extra:
        raise RuntimeError(f"{len(extra)} unexpected files in {folder} (e.g. {sorted(extra)[0]})")


# MARK: - Systems: servers on 127.0.0.2, clients through the proxy (or straight to the server, `direct`)

class LatencySystem(System):
    direct = False  # True: clients connect to the server itself (the proxy check's baseline)

    @property
    def client_host(self):
        return SERVER_HOST if self.direct else PROXY_HOST

    def server_ports(self):
        return [self.port]

    def proxy_arguments(self):
        return ["--listen", f"{PROXY_HOST}:{self.port}", "--to", f"{SERVER_HOST}:{self.port}"]


class Ferry(LatencySystem):
    name = "ferry"

    def __init__(self, work, bin_dir, timeout):
        super().__init__(work)
        self.bin, self.timeout = bin_dir, timeout
        self.port = free_ports(1)
        self.process = subprocess.Popen(
            [os.path.join(bin_dir, "ferryd"), "--root", self.library, "--host", SERVER_HOST, "--port",
             str(self.port), "--log-level", "error", "--max-connections-per-address", "4096"],
            stdout=subprocess.DEVNULL)
        wait_for_server(self.port)

    def ferry(self, *args, stdout=subprocess.PIPE):
        return run([os.path.join(self.bin, "ferry")] + list(args) + ["--host", self.client_host, "--port",
                                                                     str(self.port)],
                   self.timeout, stdout=stdout)

    def retr(self, name, target):
        self.ferry("get", name, "--output", target, "--force")

    def stor(self, path):
        self.ferry("put", path, "--overwrite")

    def get_many(self, count):
        """The whole library (the small files), listing included, like `lftp mirror`; returns the folder."""
        self.ferry("get", "--all", "--output", self.client, "--force")
        return self.client

    def put_many(self, folder):
        self.ferry("put", folder, "--overwrite")

    def list(self, target):
        with open(target, "wb") as out:
            self.ferry("list", stdout=out)


class FTPPeer(LatencySystem):
    """An FTP server on 127.0.0.2 whose passive ports [pasv, pasv + 50) the proxy forwards; curl for single
    transfers and listings, lftp for many files."""

    parallel = {"get": 1, "put": 1}

    def __init__(self, work, timeout):
        super().__init__(work)
        self.timeout = timeout
        base = free_ports(1 + PASV_PORTS)
        self.port, self.pasv = base, base + 1

    def proxy_arguments(self):
        return super().proxy_arguments() + [
            "--range", f"{PROXY_HOST}:{self.pasv}-{self.pasv + PASV_PORTS - 1}={SERVER_HOST}"]

    def url(self, path=""):
        return f"ftp://{self.client_host}:{self.port}/{path}"

    def curl(self, *args, stdout=subprocess.PIPE):
        # EPSV (curl's default): the data connection goes to the control connection's address.
        return run(["curl", "-s", "-S", "--max-time", str(self.timeout)] + list(args), self.timeout + 5,
                   stdout=stdout)

    def retr(self, name, target):
        # Without a SIZE first: one round trip less (the file is checked afterwards).
        self.curl("--ignore-content-length", "-o", target, self.url(name))

    def stor(self, path):
        self.curl("-T", path, self.url(os.path.basename(path)))

    def lftp(self, command):
        settings = LFTP_SETTINGS
        if self.direct:
            # The servers announce 127.0.0.1 (the proxy) in their PASV answers: without a proxy in the way,
            # EPSV sends the data connections to the address the control connection uses.
            settings += "; set ftp:prefer-epsv yes"
        run(["lftp", "-c", f"{settings}; open {self.url()}; {command}"], self.timeout)

    def get_many(self, count, parallel=None):
        target = os.path.join(self.client, "mirror")
        self.lftp(f"mirror --no-perms --parallel={parallel or self.parallel['get']} . {target}")
        return target

    def put_many(self, folder, parallel=None):
        self.lftp(f"mirror -R --no-perms --parallel={parallel or self.parallel['put']} {folder} .")

    def list(self, target):
        self.curl("-o", target, self.url())


class Vsftpd(FTPPeer):
    name = "vsftpd"

    def __init__(self, work, timeout):
        super().__init__(work, timeout)
        empty = os.path.join(work, "vsftpd-empty")
        os.makedirs(empty, exist_ok=True)
        config = os.path.join(work, "vsftpd.conf")
        # Its passive sockets are bound to the address the control connection came to (127.0.0.2, through the
        # proxy), on a port of the range; pasv_address is what it announces in PASV answers: the proxy.
        with open(config, "w") as f:
            f.write(vsftpd_config(SERVER_HOST, self.port, self.library, PROXY_HOST, self.pasv,
                                  self.pasv + PASV_PORTS - 1, empty))
        self.process = subprocess.Popen(["vsftpd", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_server(self.port)


class Pyftpdlib(FTPPeer):
    name = "pyftpdlib"

    def __init__(self, work, timeout):
        super().__init__(work, timeout)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyftpdlib", "-i", SERVER_HOST, "-p", str(self.port), "-w", "-d", self.library,
             "-n", PROXY_HOST, "-r", f"{self.pasv}-{self.pasv + PASV_PORTS - 1}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_server(self.port)


class Sftp(LatencySystem):
    """OpenSSH's sftp against an sshd of this run's own on 127.0.0.2 (Benchmarks/secure.py's, public-key log-in),
    through the proxy: one SSH connection per command, as `ferry` opens one connection. sftp moves many files one
    after another, a few round trips each, so it moves only `files` of the small files (scaled to files/s)."""

    name = "sftp"

    def __init__(self, work, timeout, files):
        super().__init__(work)
        self.timeout, self.files = timeout, files
        self.sshd = Sshd(os.path.join(work, "sftp"), address=SERVER_HOST, port=free_ports(1))
        self.port, self.process = self.sshd.port, self.sshd.process

    def batch(self, commands, stdout=subprocess.PIPE):
        """Runs sftp with `commands` (one per line) and stops at the first that fails."""
        try:
            result = subprocess.run(self.sshd.command(self.client_host), input="\n".join(commands).encode() + b"\n",
                                    stdout=stdout, stderr=subprocess.PIPE, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"sftp took over {self.timeout} s (killed)")
        if result.returncode != 0:
            raise RuntimeError(f"sftp failed ({result.returncode}): {result.stderr.decode(errors='replace')[-300:]}")

    def retr(self, name, target):
        self.batch([f"get {self.library}/{name} {target}"])

    def stor(self, path):
        self.batch([f"put {path} {self.library}/{os.path.basename(path)}"])

    def get_many(self, count):
        self.batch([f"lcd {self.client}", f"cd {self.library}", "get *"])
        return self.client

    def put_many(self, folder):
        self.batch([f"lcd {folder}", f"cd {self.library}", "put *"])

    def list(self, target):
        with open(target, "wb") as out:
            self.batch([f"ls -l {self.library}"], stdout=out)


# MARK: - The proxy

def compile_proxy(directory):
    source = os.path.join(HERE, "delay-proxy.c")
    binary = os.path.join(directory, "delay-proxy")
    result = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", binary, source], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=120)
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(f"gcc delay-proxy.c: {result.stderr.decode(errors='replace')[-500:]}")
    return binary


class Proxy:
    def __init__(self, binary, one_way_ms, systems, handshake=True):
        args = [binary, "--delay-ms", str(one_way_ms)] + (["--no-handshake"] if not handshake else [])
        for system in systems:
            args += system.proxy_arguments()
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE)
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        if not ready or self.process.stdout.readline() != b"ready\n":
            self.stop()
            raise RuntimeError("delay-proxy did not start")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# MARK: - Measurements

def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def clear_folder(folder):
    """Removes what the folder holds but hidden entries (ferryd's staging folder)."""
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def small_files(systems, folders, record, key):
    """Upload a folder's files with one command, then download the whole library with one command; each system
    moves the folder `folders` gives it (sftp fewer files)."""
    for system in systems:
        folder = folders[system.name]
        names = sorted(os.listdir(folder))
        clear_folder(system.library)
        seconds, _ = timed(lambda: system.put_many(folder))
        check_folder(system.library, folder, names)
        record(f"{key} upload files/s", system, len(names) / seconds)
        system.clear_client()
        seconds, target = timed(lambda: system.get_many(len(names)))
        check_folder(target, folder, names)
        record(f"{key} download files/s", system, len(names) / seconds)
        system.clear_client()


def listing(systems, entries, record, key):
    for system in systems:
        target = os.path.join(system.client, "listing")
        seconds, _ = timed(lambda: system.list(target))
        with open(target, "rb") as f:
            lines = sum(1 for line in f if b"entry-" in line)
        if lines != entries:
            raise RuntimeError(f"{system.name}'s listing has {lines} entries, not {entries}")
        record(f"{key} ms", system, seconds * 1000)
        system.clear_client()


def bulk(systems, path, record, key):
    size = os.path.getsize(path)
    for system in systems:
        stored = os.path.join(system.library, os.path.basename(path))
        if os.path.exists(stored):
            os.remove(stored)
        warm_free_memory(size * 3 // 2)
        seconds, _ = timed(lambda: system.stor(path))
        if not same_contents(stored, path):
            raise RuntimeError(f"{system.name}: the stored {os.path.basename(path)} differs from what was sent")
        record(f"{key} STOR MB/s", system, size / seconds / 1e6)
        target = os.path.join(system.client, "bulk.out")
        warm_free_memory(size * 3 // 2)
        seconds, _ = timed(lambda: system.retr(os.path.basename(path), target))
        if not same_contents(target, path):
            raise RuntimeError(f"{system.name}: the retrieved {os.path.basename(path)} differs from the original")
        record(f"{key} RETR MB/s", system, size / seconds / 1e6)
        system.clear_client()
        os.remove(stored)


def choose_parallel(peers, folder, choices, record_tuning):
    """Each FTP peer's fastest lftp --parallel for mirror -R and mirror, on the folder's files (at the proxy's
    delay). One pass, from the largest choice down, stopping once a choice takes over twice the best time: with
    round trips the cost, halving the connections about doubles the time, so a smaller one cannot win (and 1, the
    slowest by far, would take most of the tuning's time)."""
    names = sorted(os.listdir(folder))
    for system in peers:
        times = {"put": {}, "get": {}}
        for kind in times:
            for parallel in sorted(choices, reverse=True):
                clear_folder(system.library)
                if kind == "get":
                    for name in names:
                        shutil.copyfile(os.path.join(folder, name), os.path.join(system.library, name))
                    seconds, target = timed(lambda: system.get_many(len(names), parallel))
                    check_folder(target, folder, names)
                else:
                    seconds, _ = timed(lambda: system.put_many(folder, parallel))
                    check_folder(system.library, folder, names)
                system.clear_client()
                times[kind][parallel] = seconds
                if seconds > 2 * min(times[kind].values()):
                    break
        system.parallel = {kind: min(by, key=by.get) for kind, by in times.items()}
        record_tuning(system.name, times, system.parallel)
    for system in peers:
        clear_folder(system.library)


def socket_settings():
    settings = {}
    for name, path in [("net.ipv4.tcp_rmem", "/proc/sys/net/ipv4/tcp_rmem"),
                       ("net.ipv4.tcp_wmem", "/proc/sys/net/ipv4/tcp_wmem"),
                       ("net.core.rmem_max", "/proc/sys/net/core/rmem_max"),
                       ("net.core.wmem_max", "/proc/sys/net/core/wmem_max")]:
        try:
            with open(path) as f:
                settings[name] = " ".join(f.read().split())
        except OSError:
            settings[name] = "?"
    return settings


def per_rtt(text, rtts, cast):
    """'3' or '3,3,2': one value for every round trip, or one each."""
    values = [cast(v) for v in str(text).split(",")]
    if len(values) == 1:
        return values * len(rtts)
    if len(values) != len(rtts):
        raise SystemExit(f"{text}: give one value or one per round trip ({len(rtts)})")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="folder with release ferryd and ferry")
    parser.add_argument("--base", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    parser.add_argument("--rtts", default="2,20,100", help="round trips in ms (each direction gets half)")
    parser.add_argument("--rounds", default="3", help="rounds, for every round trip or one per round trip")
    parser.add_argument("--small-files", default="1000",
                        help="4 KiB files moved per round, for every round trip or one per round trip")
    parser.add_argument("--list-entries", type=int, default=10000)
    parser.add_argument("--bulk-mib", type=int, default=256)
    parser.add_argument("--parallel", default="auto",
                        help="lftp mirror --parallel: a number, or auto (the best of --parallel-choices for each "
                             "peer and direction, on a sample at 20 ms round trip)")
    parser.add_argument("--parallel-choices", default="1,4,8,16,32,64")
    parser.add_argument("--parallel-sample", type=int, default=100, help="files in the --parallel=auto sample")
    parser.add_argument("--only", default="small,list,bulk", help="comma-separated workloads")
    parser.add_argument("--systems", default="ferry,vsftpd,pyftpdlib,sftp")
    parser.add_argument("--sftp-files", type=int, default=50,
                        help="how many of the small files sftp moves (a few round trips each, one after another)")
    parser.add_argument("--no-handshake", action="store_true",
                        help="let the proxy connect to the server at once (no round trip for TCP's handshake)")
    parser.add_argument("--check-proxy", action="store_true",
                        help="instead: the workloads at delay 0 through the proxy against straight to the server")
    parser.add_argument("--timeout", type=int, default=600, help="seconds any one client command may take")
    parser.add_argument("--raw", default=os.path.join(HERE, "results", "latency.json"))
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    rtts = [float(r) for r in args.rtts.split(",")]
    if args.check_proxy:
        rtts = [0.0]
        if args.raw == parser.get_default("raw"):
            args.raw = os.path.join(HERE, "results", "latency-proxy-check.json")
    if args.check_proxy:  # the first of each list
        args.rounds, args.small_files = args.rounds.split(",")[0], args.small_files.split(",")[0]
    rounds = per_rtt(args.rounds, rtts, int)
    counts = per_rtt(args.small_files, rtts, int)
    wanted = args.systems.split(",")
    choices = [int(c) for c in args.parallel_choices.split(",")]
    if max(choices + [0 if args.parallel == "auto" else int(args.parallel)]) > PASV_PORTS - 10:
        raise SystemExit(f"lftp --parallel above {PASV_PORTS - 10} would run out of the {PASV_PORTS} passive ports")

    # SIGTERM as Ctrl-C: the `finally` below stops every process this started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    work = tempfile.mkdtemp(prefix="ferry-latency-", dir=args.base)
    systems, proxy = [], None
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.release()}",
               "socket buffers": socket_settings(), "handshake round trip": not args.no_handshake,
               "bulk MiB": args.bulk_mib, "list entries": args.list_entries, "rtts ms": rtts, "rounds": rounds,
               "small files": counts, "sftp small files": args.sftp_files, "lftp settings": LFTP_SETTINGS,
               "raw": {}}
    try:
        binary = compile_proxy(work)
        for name in wanted:
            if name == "ferry":
                systems.append(Ferry(work, os.path.abspath(args.bin), args.timeout))
            elif name == "vsftpd":
                systems.append(Vsftpd(work, args.timeout))
            elif name == "pyftpdlib":
                systems.append(Pyftpdlib(work, args.timeout))
            elif name == "sftp":
                if not os.path.exists("/usr/sbin/sshd"):
                    print("sftp left out: no /usr/sbin/sshd (apt-get install openssh-server)", file=sys.stderr)
                    continue
                systems.append(Sftp(work, args.timeout, args.sftp_files))
            else:
                raise SystemExit(f"unknown system {name}")
        peers = [s for s in systems if isinstance(s, FTPPeer)]

        source = os.path.join(work, "source")
        small = os.path.join(source, "small")
        os.makedirs(small)
        for i in range(max(counts + [args.parallel_sample, args.sftp_files])):
            with open(os.path.join(small, f"f{i:05d}"), "wb") as f:
                f.write(os.urandom(SMALL_SIZE))
        all_small = sorted(os.listdir(small))

        def small_folder(count):
            """A folder of the first `count` small files (links)."""
            if count == len(all_small):
                return small
            folder = small + f"-{count}"
            if not os.path.isdir(folder):
                os.makedirs(folder)
                for name in all_small[:count]:
                    os.link(os.path.join(small, name), os.path.join(folder, name))
            return folder

        if peers and "small" in args.only:
            if args.parallel == "auto":
                tuning_rtt = 0.0 if args.check_proxy else 20.0
                proxy = Proxy(binary, tuning_rtt / 2, systems, not args.no_handshake)
                results["lftp --parallel tuning"] = {"rtt ms": tuning_rtt, "files": args.parallel_sample}

                def record_tuning(name, times, chosen):
                    results["lftp --parallel tuning"][name] = {"seconds": times, "chosen": chosen}
                    note = (f"lftp --parallel for {name} ({args.parallel_sample} files, {tuning_rtt:g} ms RTT): "
                            + "; ".join(f"{kind}: " + ", ".join(f"{p}: {s:.2f} s" for p, s in by.items())
                                        + f" → {chosen[kind]}" for kind, by in times.items()))
                    if max(choices) in chosen.values():
                        note += " (the largest tried: more might be faster still)"
                    results["lftp --parallel tuning"][name]["note"] = note
                    print(note, file=sys.stderr)
                choose_parallel(peers, small_folder(args.parallel_sample), choices, record_tuning)
                proxy.stop()
                proxy = None
            else:
                for system in peers:
                    system.parallel = {"get": int(args.parallel), "put": int(args.parallel)}
        results["lftp --parallel"] = {s.name: s.parallel for s in peers}

        bulk_path = os.path.join(source, "bulk.bin")
        if "bulk" in args.only:
            make_file(bulk_path, args.bulk_mib * MiB)

        for rtt, round_count, count in zip(rtts, rounds, counts):
            proxy = Proxy(binary, rtt / 2, systems, not args.no_handshake)
            paths = [("direct", True), ("proxy", False)] if args.check_proxy else [(None, False)]
            raw = results["raw"].setdefault(f"{rtt:g}", {})

            def recorder(label):
                def record(measurement, system, value):
                    name = system.name if label is None else f"{system.name} ({label})"
                    raw.setdefault(measurement, {}).setdefault(name, []).append(value)
                return record

            def each_round(action):
                for _ in range(round_count):
                    for label, direct in paths:
                        for system in systems:
                            system.direct = direct
                        action(recorder(label))

            print(f"RTT {rtt:g} ms: {round_count} rounds, {count} small files "
                  f"({time.time() - started:.0f} s so far)", file=sys.stderr)
            if "small" in args.only:
                folders = {s.name: small_folder(min(count, s.files) if isinstance(s, Sftp) else count)
                           for s in systems}
                each_round(lambda record: small_files(systems, folders, record, f"{count} × 4 KiB"))
                for system in systems:
                    clear_folder(system.library)
            if "list" in args.only:
                for system in systems:
                    for i in range(args.list_entries):
                        open(os.path.join(system.library, f"entry-{i:06d}.txt"), "wb").close()
                each_round(lambda record: listing(systems, args.list_entries, record, f"LIST {args.list_entries}"))
                for system in systems:
                    clear_folder(system.library)
            if "bulk" in args.only:
                each_round(lambda record: bulk(systems, bulk_path, record, f"{args.bulk_mib} MiB"))
            proxy.stop()
            proxy = None
        results["seconds"] = time.time() - started
    finally:
        if proxy:
            proxy.stop()
        stop_all(systems, work)
    save(results, args.raw)
    report(results, [s.name for s in systems], args.check_proxy)


def report(results, names, check_proxy):
    if check_proxy:
        names = [f"{n} ({label})" for n in names for label in ("direct", "proxy")]
    print(f"\n{results['machine']}; medians of {'/'.join(map(str, results['rounds']))} interleaved rounds "
          f"(per round trip); took {results['seconds']:.0f} s")
    print("Socket buffers: " + "; ".join(f"{k} = {v}" for k, v in results["socket buffers"].items()))
    if results.get("lftp --parallel"):
        print("lftp mirror --parallel: " + "; ".join(
            f"{name}: get {p['get']}, put {p['put']}" for name, p in results["lftp --parallel"].items()))
        for tuning in results.get("lftp --parallel tuning", {}).values():
            if isinstance(tuning, dict) and "note" in tuning:
                print(f"  {tuning['note']}")
        print(f"lftp settings: {results['lftp settings']}; curl RETR with --ignore-content-length (no SIZE)")
    print("Proxy: each direction holds bytes for half the round trip"
          + (", and a new connection's first bytes for its handshake's round trip" if results["handshake round trip"]
             else " (no round trip for TCP's handshake)") + "; it acknowledges at once, so bulk is not window-bound.")
    if "sftp" in names:
        print(f"sftp moves {results['sftp small files']} of the small files each way (files one after another, a few "
              "round trips each), shown as files/s; OpenSSH's sftp and sshd, internal-sftp, public-key log-in.")
    if len(set(results["small files"])) > 1:
        print("Small files: " + ", ".join(f"{c} files at {r:g} ms" for r, c in zip(results["rtts ms"],
                                                                                     results["small files"]))
              + " (fewer where round trips are long, for the run's time), shown as files/s.")
    print()
    print("| RTT | workload | " + " | ".join(names) + " | best peer | Ferry speed-up |")
    print("|---:|---|" + "---:|" * len(names) + "---|---:|")
    for rtt, measurements in results["raw"].items():
        for measurement, values in measurements.items():
            medians = {name: statistics.median(v) for name, v in values.items()}
            lower_is_better = measurement.endswith(" ms")
            cells = [f"{medians[n]:.1f}" if n in medians else "—" for n in names]
            best, speedup = "", ""
            peers = {n: v for n, v in medians.items() if not n.startswith("ferry")}
            if not check_proxy and "ferry" in medians and peers:
                best = min(peers, key=peers.get) if lower_is_better else max(peers, key=peers.get)
                ratio = peers[best] / medians["ferry"] if lower_is_better else medians["ferry"] / peers[best]
                speedup = f"{ratio:.2f}×"
            print(f"| {rtt} ms | {measurement} | " + " | ".join(cells) + f" | {best} | {speedup} |")
    if not check_proxy:
        print("\nFerry speed-up: the best peer's time over Ferry's (files/s and MB/s: Ferry's rate over the best "
              "peer's); above 1, Ferry is faster.")


if __name__ == "__main__":
    main()
