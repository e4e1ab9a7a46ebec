#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora (Fuzz/Corpus/HARNESS/) from SPEC.md's test vectors and the recorded sessions
in sessions/ (see record_sessions.py), each in the input format its harness reads."""
import hashlib, os, re, shutil, struct

here = os.path.dirname(os.path.abspath(__file__))
fuzz = os.path.dirname(here)
spec = open(os.path.join(fuzz, "..", "SPEC.md")).read()
MAGIC = b"\x89FERRY\r\n"
KNOWN = [0x01, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x30, 0x31, 0x32, 0x14, 0x15, 0x16]

vectors = {}
for name, body in re.findall(r"```hex vector=(\S+)[^\n]*\n(.*?)```", spec, re.S):
    vectors[name] = bytes.fromhex("".join(body.split()))

sessions = {}
sessions_dir = os.path.join(here, "sessions")
for file in sorted(os.listdir(sessions_dir)):
    sessions[file] = open(os.path.join(sessions_dir, file), "rb").read()

def frames(stream):
    """(type, payload) for each frame after the magic; stops at the first incomplete frame."""
    if stream.startswith(MAGIC):
        stream = stream[len(MAGIC):]
    else:
        return
    while len(stream) >= 14:
        kind, _, length = struct.unpack(">BBQ", stream[:10])
        if len(stream) < 14 + length:
            return
        yield kind, stream[10:10 + length]
        stream = stream[14 + length:]

def record(kind, body=b""):
    return struct.pack(">BH", kind, len(body)) + body

def script(stream):
    """A WireScript that replays the stream with valid frames (see Sources/FuzzSupport/WireScript.swift)."""
    if not stream.startswith(MAGIC):
        return record(0, stream[:8191])
    out = b""
    for kind, payload in frames(stream):
        if kind == 0x01:
            out += record(4)
        elif kind == 0x30:
            for start in range(0, max(len(payload), 1), 8191):
                out += record(2, payload[start:start + 8191])
        elif kind == 0x31:
            out += record(3)
        else:
            out += record(1, bytes([kind]) + payload[:8190])
    return out

corpora = {name: [] for name in
           ["FuzzFrameParser", "FuzzMessageDecoder", "FuzzRoundTrip", "FuzzServerSession", "FuzzClientReplies"]}
for name, data in list(vectors.items()) + list(sessions.items()):
    corpora["FuzzFrameParser"].append(b"\xff\xff\x07" + data)
for name, data in vectors.items():
    if len(data) >= 14 and data[0] in KNOWN:
        corpora["FuzzMessageDecoder"].append(bytes([KNOWN.index(data[0])]) + data[10:-4])
for name, data in sessions.items():
    for kind, payload in frames(data):
        if kind in KNOWN and len(payload) < 4096:
            corpora["FuzzMessageDecoder"].append(bytes([KNOWN.index(kind)]) + payload)
for op in range(17):
    corpora["FuzzRoundTrip"].append(bytes([op]) + bytes(range(op, op + 40)))
for name, data in sessions.items():
    if name.endswith(".c2s"):
        corpora["FuzzServerSession"].append(script(data))
    else:
        operations = 0b01010101 if name.startswith("get") else 0b10101010 if name.startswith("put") else 0
        corpora["FuzzClientReplies"].append(bytes([operations]) + script(data))

def name_field(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data

# A version 2 session (the harness's default HELLO announces 1-2): an upload, then RENAME and DELETE of it, a RENAME
# of a missing file, LIST and EXIT. No recorded session has them: the recorder's client of the time spoke version 1.
corpora["FuzzServerSession"].append(
    record(4)
    + record(1, bytes([0x12]) + struct.pack(">QQB", 3, 0, 0) + name_field("a.txt")) + record(2, b"abc") + record(3)
    + record(1, bytes([0x15, 0x00]) + name_field("a.txt") + name_field("b.txt"))
    + record(1, bytes([0x14]) + name_field("b.txt"))
    + record(1, bytes([0x15, 0x01]) + name_field("missing") + name_field("c.txt"))
    + record(1, bytes([0x10])) + record(1, bytes([0x13]))
)

# A version 3 session: an upload, then RETRs resuming it with hostile offsets and conditions (past the end, the
# largest u64, a condition that fails, one that names a size of 0), then EXIT.
def retr(offset, name, condition=None):
    body = bytes([0x11]) + struct.pack(">Q", offset) + name_field(name)
    if condition is not None:
        body += struct.pack(">Qq", *condition)
    return record(1, body)
corpora["FuzzServerSession"].append(
    record(4)
    + record(1, bytes([0x12]) + struct.pack(">QQB", 3, 0, 0) + name_field("a.txt")) + record(2, b"abc") + record(3)
    + retr(1, "a.txt") + retr(4, "a.txt") + retr(2**64 - 1, "a.txt", (3, 0)) + retr(2, "a.txt", (0, -1))
    + retr(1, "a.txt", (3, 2**63 - 1)) + retr(0, "missing", (1, 1))
    + record(1, bytes([0x13]))
)

# A version 4 session: a streamed upload (300 KiB in DATA records of 8 KiB repeated 8 times) resumed with a token
# the server never gave, so it starts from 0; hostile offsets (without a token, past the size, the largest u64);
# an END without the whole file's CRC; and an upload left cut at the end of the input, which the server keeps.
token = bytes(range(16))
def stor(size, offset, name, token=b""):
    return record(1, bytes([0x12]) + struct.pack(">QQB", size, offset, 0) + name_field(name) + token)
chunk = bytes(range(256)) * 32
corpora["FuzzServerSession"].append(
    record(4)
    + stor(8 * 8192 * 5, 8 * 8192 * 5, "big.bin", token) + record(2 + 5 * 7, chunk) * 5 + record(3)
    + stor(300_000, 5, "b.bin") + stor(300_000, 300_001, "b.bin", token) + stor(300_000, 2**64 - 1, "b.bin", token)
    + stor(300_000, 0, "c.bin", token) + record(2 + 5 * 7, chunk) * 4
)

for harness, inputs in corpora.items():
    directory = os.path.join(fuzz, "Corpus", harness)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    for data in inputs:
        with open(os.path.join(directory, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print(harness, len(inputs), "seeds")
