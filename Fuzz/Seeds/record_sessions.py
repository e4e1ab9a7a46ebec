#!/usr/bin/env python3
"""Records real Ferry sessions byte for byte, for the fuzzers' seed corpus.

Starts ferryd on a temporary library, puts a recording TCP relay in front of it, drives the real `ferry` client
through it (uploads, downloads, listings, errors), and writes each connection's two directions to
sessions/NAME.c2s and sessions/NAME.s2c.

    Fuzz/Seeds/record_sessions.py BIN_DIR        (BIN_DIR holds ferryd and ferry, e.g. .build/release)
"""
import os, socket, subprocess, sys, tempfile, threading, time

bin_dir = os.path.abspath(sys.argv[1])
here = os.path.dirname(os.path.abspath(__file__))
out_dir = os.path.join(here, "sessions")
os.makedirs(out_dir, exist_ok=True)
work = tempfile.mkdtemp(prefix="ferry-record-")
library = os.path.join(work, "library")

server = subprocess.Popen([os.path.join(bin_dir, "ferryd"), "--root", library, "--host", "127.0.0.1", "--port", "0",
                           "--log-level", "error"], stdout=subprocess.PIPE, text=True)
line = server.stdout.readline()
server_port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])

relay = socket.socket()
relay.bind(("127.0.0.1", 0))
relay.listen(16)
relay_port = relay.getsockname()[1]
current = {"name": None}

def pump(src, dst, sink):
    while True:
        try: data = src.recv(65536)
        except OSError: data = b""
        if not data:
            try: dst.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        sink.append(data)
        dst.sendall(data)

def serve():
    while True:
        try: client, _ = relay.accept()
        except OSError: return
        upstream = socket.create_connection(("127.0.0.1", server_port))
        current["count"] = current.get("count", 0) + 1
        name = "%s-%d" % (current["name"], current["count"])
        c2s, s2c = [], []
        threads = [threading.Thread(target=pump, args=(client, upstream, c2s)),
                   threading.Thread(target=pump, args=(upstream, client, s2c))]
        for t in threads: t.start()
        def finish(threads=threads, name=name, c2s=c2s, s2c=s2c):
            for t in threads: t.join()
            with open(os.path.join(out_dir, name + ".c2s"), "wb") as f: f.write(b"".join(c2s))
            with open(os.path.join(out_dir, name + ".s2c"), "wb") as f: f.write(b"".join(s2c))
        threading.Thread(target=finish).start()

threading.Thread(target=serve, daemon=True).start()

def ferry(name, *args, stdin=None):
    current["name"] = name
    subprocess.run([os.path.join(bin_dir, "ferry")] + list(args) + ["--port", str(relay_port)],
                   cwd=work, input=stdin, capture_output=True, text=True)
    time.sleep(0.3)

with open(os.path.join(work, "small.txt"), "wb") as f: f.write(b"hello ## world\n")
with open(os.path.join(work, "binary.bin"), "wb") as f: f.write(bytes(range(256)) * 80)
open(os.path.join(work, "empty"), "wb").close()

ferry("list-empty", "list")
ferry("put-small", "put", "small.txt")
ferry("put-binary", "put", "binary.bin")
ferry("put-empty", "put", "empty")
ferry("put-exists", "put", "small.txt")
ferry("put-overwrite", "put", "small.txt", "--overwrite")
ferry("list", "list")
ferry("get-small", "get", "small.txt", "--output", "got-small.txt")
ferry("get-binary", "get", "binary.bin", "--output", "got-binary.bin")
ferry("get-missing", "get", "missing")
ferry("shell", stdin="list\nget small.txt --force\nput empty --overwrite\nexit\n")

# Several files over one connection: pipelined small uploads (one refused), a streamed large one, pipelined
# downloads with a missing name among them.
with open(os.path.join(work, "large.bin"), "wb") as f: f.write(bytes(range(256)) * 1200)
os.makedirs(os.path.join(work, "folder"))
for i in range(3):
    with open(os.path.join(work, "folder", "part-%d" % i), "wb") as f: f.write(b"part %d ## " % i * (i + 1))
for folder in ("mirror", "several"): os.makedirs(os.path.join(work, folder))
ferry("put-folder", "put", "folder", "small.txt")
ferry("put-large", "put", "large.bin")
ferry("get-all", "get", "--all", "-o", "mirror")
ferry("get-several", "get", "small.txt", "missing", "large.bin", "-o", "several")

# The old protocol's greeting, recorded raw.
current["name"] = "seed-client"
s = socket.create_connection(("127.0.0.1", relay_port)); s.sendall(b"LIST"); time.sleep(0.3); s.close()
time.sleep(0.5)
relay.close()
server.terminate(); server.wait()
print("recorded", len(os.listdir(out_dir)) // 2, "sessions into", out_dir)
