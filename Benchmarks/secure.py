#!/usr/bin/env python3
"""Ferry over TLS against OpenSSH's sftp, and against plain Ferry: one machine, one run, interleaved, medians.

Run through Benchmarks/secure.sh, which installs openssh-server and builds Ferry. Every measurement runs each
system in turn (Ferry TLS, Ferry plain, sftp; again; ...) `--rounds` times. sshd is started by this script on a
loopback port with a host key and a client key made for the run (public-key log-in, its default ciphers); ferryd
with `--tls-self-signed`, the client pinning its fingerprint. Wall time is the whole client process; CPU is the
client's (its rusage) and the server's (ferryd's, or sshd's and its reaped session processes').
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

from bench import MiB, free_port, wait_for_port


def cpu_seconds(pid):
    """User + system time of a process and the children it has reaped (sshd's sessions), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def timed(args, server_pid, stdin=None, cwd=None):
    """Runs a client to completion: (wall seconds, client CPU seconds, server CPU seconds)."""
    server_before = cpu_seconds(server_pid)
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if stdin:
        process.stdin.write(stdin.encode())
        process.stdin.close()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    error = process.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args[0]} failed: {error[-400:]}")
    time.sleep(0.3)  # sshd reaps its session processes asynchronously
    return wall, usage.ru_utime + usage.ru_stime, cpu_seconds(server_pid) - server_before


def write_random(path, size):
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            chunk = min(remaining, 16 * MiB)
            f.write(os.urandom(chunk))
            remaining -= chunk


class Sshd:
    """sshd for one run: its own host key, a client key it accepts, sftp served by internal-sftp; on `address`, at
    `port` (a free one if not given)."""

    def __init__(self, base, address="127.0.0.1", port=None):
        self.folder = os.path.join(base, "ssh")
        os.makedirs(self.folder, mode=0o700)
        os.makedirs("/run/sshd", exist_ok=True)
        self.host_key = os.path.join(self.folder, "host_ed25519")
        self.client_key = os.path.join(self.folder, "client_ed25519")
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        shutil.copy(self.client_key + ".pub", os.path.join(self.folder, "authorized_keys"))
        self.port = port or free_port()
        config = os.path.join(self.folder, "sshd_config")
        with open(config, "w") as f:
            f.write(f"""Port {self.port}
ListenAddress {address}
HostKey {self.host_key}
AuthorizedKeysFile {self.folder}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PidFile {self.folder}/sshd.pid
Subsystem sftp internal-sftp
""")
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, host=address)
        self.pid = self.process.pid

    def command(self, host="127.0.0.1"):
        """sftp reading its commands from standard input (`-b -`), to `host` at this server's port."""
        return ["sftp", "-q", "-b", "-", "-i", self.client_key, "-P", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                f"{os.environ.get('USER', 'root')}@{host}"]

    def cipher(self):
        result = subprocess.run(["ssh", "-G", "127.0.0.1"], stdout=subprocess.PIPE, text=True)
        return next((line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("ciphers ")), "?")

    def stop(self):
        self.process.terminate()
        self.process.wait()


class Ferryd:
    def __init__(self, binaries, library, tls):
        self.port = free_port()
        arguments = [os.path.join(binaries, "ferryd"), "--root", library, "--port", str(self.port),
                     "--log-level", "warning"] + (["--tls-self-signed"] if tls else [])
        self.process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.fingerprint = None
        for line in self.process.stdout:
            if "fingerprint" in line:
                self.fingerprint = line.split()[-1]
            if "listening on" in line:
                break
        self.pid = self.process.pid
        self.binary = os.path.join(binaries, "ferry")
        self.options = ["--port", str(self.port)] + (["--pin", self.fingerprint] if tls else [])

    def client(self, *arguments):
        """`ferry SUBCOMMAND …` against this server (connection options go after the subcommand)."""
        return [self.binary] + list(arguments) + self.options

    def stop(self):
        self.process.terminate()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--base", default="/dev/shm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--small-kib", type=int, default=4)
    parser.add_argument("--raw")
    options = parser.parse_args()

    base = tempfile.mkdtemp(prefix="ferry-secure-", dir=options.base)
    source, target = os.path.join(base, "source"), os.path.join(base, "target")
    ferry_library, sftp_library = os.path.join(base, "ferry-library"), os.path.join(base, "sftp-library")
    # Ferry's libraries are flat: the small files get one of their own, as sftp's get a folder.
    ferry_small_library = os.path.join(base, "ferry-small-library")
    small_source = os.path.join(source, "small")
    for folder in (source, target, ferry_library, ferry_small_library, sftp_library, small_source):
        os.makedirs(folder, exist_ok=True)
    bulk = options.bulk_mib * MiB
    write_random(os.path.join(source, "big.bin"), bulk)
    small_names = [f"s{i:05d}.bin" for i in range(options.small_files)]
    for name in small_names:
        write_random(os.path.join(small_source, name), options.small_kib * 1024)
    # What the downloads read: the same bytes in each library.
    shutil.copy(os.path.join(source, "big.bin"), os.path.join(ferry_library, "big.bin"))
    shutil.copy(os.path.join(source, "big.bin"), os.path.join(sftp_library, "big.bin"))
    os.makedirs(os.path.join(sftp_library, "small"))
    for name in small_names:
        shutil.copy(os.path.join(small_source, name), os.path.join(ferry_small_library, name))
        shutil.copy(os.path.join(small_source, name), os.path.join(sftp_library, "small", name))

    sshd = Sshd(base)
    plain = Ferryd(options.bin, ferry_library, tls=False)
    tls = Ferryd(options.bin, ferry_library, tls=True)
    small_plain = Ferryd(options.bin, ferry_small_library, tls=False)
    small_tls = Ferryd(options.bin, ferry_small_library, tls=True)
    systems = {"Ferry TLS": tls, "Ferry plain": plain, "sftp": sshd}
    small_servers = {"Ferry TLS": small_tls, "Ferry plain": small_plain, "sftp": sshd}
    results = {}

    def clear(path):
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)

    def measure(workload, system, round_number):
        server = (small_servers if workload.startswith("small") else systems)[system]
        up = os.path.join(target, "up")
        if workload == "bulk STOR":
            name = f"up-{round_number}.bin"
            if system == "sftp":
                sample = timed(sshd.command(), sshd.pid,
                               stdin=f"put {source}/big.bin {sftp_library}/{name}\n")
                os.remove(os.path.join(sftp_library, name))
            else:
                sample = timed(server.client("put", os.path.join(source, "big.bin"), "--as", name), server.pid)
                os.remove(os.path.join(ferry_library, name))
        elif workload == "bulk RETR":
            destination = os.path.join(target, "big.bin")
            if system == "sftp":
                sample = timed(sshd.command(), sshd.pid, stdin=f"get {sftp_library}/big.bin {destination}\n")
            else:
                sample = timed(server.client("get", "big.bin", "--output", destination, "--force"), server.pid)
            os.remove(destination)
        elif workload == "small STOR":
            clear(up)
            if system == "sftp":
                sample = timed(sshd.command(), sshd.pid,
                               stdin=f"lcd {small_source}\ncd {up}\nput *\n")
            else:
                # Ferry's library is flat: the files go under new names, removed afterwards.
                batch = os.path.join(target, "batch")
                clear(batch)
                for name in small_names:
                    os.link(os.path.join(small_source, name), os.path.join(batch, "u" + name))
                sample = timed(server.client("put", batch), server.pid)
                for name in small_names:
                    os.remove(os.path.join(ferry_small_library, "u" + name))
        else:  # small RETR
            clear(up)
            if system == "sftp":
                sample = timed(sshd.command(), sshd.pid, stdin=f"lcd {up}\ncd {sftp_library}/small\nget *\n")
            else:
                # The whole library, like sftp's `get *` (naming 1,000 files costs swift-argument-parser 30 ms).
                sample = timed(server.client("get", "--all", "--output", up), server.pid)
            if len(os.listdir(up)) != len(small_names):
                raise RuntimeError(f"{system} {workload}: {len(os.listdir(up))} files arrived")
        results.setdefault(workload, {}).setdefault(system, []).append(sample)

    try:
        for workload in ("bulk STOR", "bulk RETR", "small STOR", "small RETR"):
            for round_number in range(options.rounds):
                for system in systems:
                    measure(workload, system, round_number)
    finally:
        for server in (plain, tls, small_plain, small_tls):
            server.stop()
        sshd.stop()
        cipher = sshd.cipher()
        shutil.rmtree(base, ignore_errors=True)

    def median(samples, index):
        return statistics.median(sample[index] for sample in samples)

    print(f"{options.rounds} rounds, medians; bulk {options.bulk_mib} MiB, small {options.small_files} × "
          f"{options.small_kib} KiB through one session; {options.base}; sftp ciphers: {cipher}\n")
    print("| workload | Ferry TLS | Ferry plain | sftp | TLS vs sftp | TLS cost (TLS / plain time) |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for workload, by_system in results.items():
        cells = []
        for system in systems:
            wall = median(by_system[system], 0)
            client, server = median(by_system[system], 1), median(by_system[system], 2)
            cells.append(f"{wall:.3f} s (CPU {client:.2f} + {server:.2f} s)")
            summary.setdefault(workload, {})[system] = {"wall": wall, "client_cpu": client, "server_cpu": server}
        speedup = summary[workload]["sftp"]["wall"] / summary[workload]["Ferry TLS"]["wall"]
        cost = summary[workload]["Ferry TLS"]["wall"] / summary[workload]["Ferry plain"]["wall"]
        print(f"| {workload} | " + " | ".join(cells) + f" | {speedup:.2f}× | {cost:.2f}× |")
    print("\nCPU: client + server, user + system. 'TLS vs sftp' is sftp's time over Ferry TLS's: above 1, Ferry is faster.")
    if options.raw:
        with open(options.raw, "w") as f:
            json.dump({"options": vars(options), "sftp_ciphers": cipher, "medians": summary,
                       "samples": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
