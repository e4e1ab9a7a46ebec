#!/usr/bin/env python3
"""Peak memory of ferryd under the two memory attacks of the hostile tester (issue "Safe to deploy", items 5 and 6).

  trickle  N sessions each send most of a 1 MiB DATA frame of an upload, then one byte a second.
  stalled  N sessions each ask for a 100 MiB file that ferryd reads from disk (placed, so it has no checksum table)
           and never read a byte of it.

Sessions come from several loopback addresses (127.0.0.1, 127.0.0.2, ...) so that the per-address connection limit
does not turn them away: the point is what the server holds for sessions it serves. ferryd runs with its default
limits. Prints ferryd's resident memory before and at its peak, in MiB.

    python3 Benchmarks/attacks.py .build/release trickle --sessions 1000
    python3 Benchmarks/attacks.py .build/release stalled --sessions 500
"""
import argparse
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, wait_for_port, tree_rss_kib  # noqa: E402

MAGIC = b"\x89FERRY\r\n"


def frame(kind, payload):
    header = struct.pack(">BBQ", kind, 0, len(payload))
    return header + payload + struct.pack(">I", zlib.crc32(header + payload))


def ferry_string(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


HELLO = frame(0x01, struct.pack(">HHQQ", 1, 1, 1 << 20, (1 << 64) - 1))


def connect(port, index, addresses, receive_buffer=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.bind((f"127.0.0.{1 + index % addresses}", 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def trickle(port, sessions, addresses, duration):
    data = frame(0x30, os.urandom(1 << 20))
    opening = MAGIC + HELLO + frame(0x12, struct.pack(">QQB", 10 << 20, 0, 0) + ferry_string("never")) \
        + data[:-64]
    socks = []
    for index in range(sessions):
        try:
            sock = connect(port, index, addresses)
            sock.sendall(opening)
            socks.append(sock)
        except OSError as error:
            print(f"session {index}: {error}", file=sys.stderr)
    rest = data[-64:]
    started, sent = time.time(), 0
    while time.time() - started < duration and sent < len(rest):
        for sock in socks:
            try:
                sock.send(rest[sent:sent + 1])
            except OSError:
                pass
        sent += 1
        time.sleep(1)
    return socks


def stalled(port, library, sessions, addresses):
    with open(os.path.join(library, "big.bin"), "wb") as f:
        f.write(os.urandom(100 << 20))
    request = MAGIC + HELLO + frame(0x11, struct.pack(">Q", 0) + ferry_string("big.bin"))
    socks = []
    for index in range(sessions):
        try:
            sock = connect(port, index, addresses, receive_buffer=4096)
            sock.sendall(request)
            socks.append(sock)
        except OSError as error:
            print(f"session {index}: {error}", file=sys.stderr)
    return socks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bin_dir")
    parser.add_argument("attack", choices=["trickle", "stalled"])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--addresses", type=int, default=20)
    parser.add_argument("--duration", type=float, default=20, help="seconds the attack lasts")
    arguments = parser.parse_args()

    work = tempfile.mkdtemp(prefix="ferry-attack-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    library = os.path.join(work, "library")
    os.makedirs(library)
    port = free_port()
    server = subprocess.Popen([os.path.join(arguments.bin_dir, "ferryd"), "--root", library, "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "error"], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        time.sleep(0.5)
        before = tree_rss_kib(server.pid)
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_kib(server.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        if arguments.attack == "trickle":
            socks = trickle(port, arguments.sessions, arguments.addresses, arguments.duration)
        else:
            socks = stalled(port, library, arguments.sessions, arguments.addresses)
            time.sleep(arguments.duration)
        done.set()
        sampler.join()
        alive = server.poll() is None
        for sock in socks:
            sock.close()
        print(f"{arguments.attack}: {len(socks)} sessions from {arguments.addresses} addresses, "
              f"ferryd RSS {before / 1024:.1f} MiB before, peak {peak[0] / 1024:.1f} MiB; "
              f"ferryd {'still running' if alive else 'EXITED'}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
