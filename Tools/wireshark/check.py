#!/usr/bin/env python3
"""Checks Tools/wireshark/ferry.lua with tshark on a capture of a whole Ferry session.

Writes a pcap (raw IPv4, loopback) of two TCP connections to port 8888: a version 4 session with every message
type (HELLO both ways, LIST, LIST_ENTRIES, LIST_END, RETR, FILE_INFO, DATA, END, STOR, READY with a token, OK,
ERROR, DELETE, RENAME, AUTH, ABORT, EXIT), its frames cut across TCP segments at awkward places (inside headers,
inside a 300,000-byte DATA payload, several frames in one segment); and a connection to port 9000, found by its
magic, whose LIST frame has a wrong CRC-32. Then runs `tshark -X lua_script:ferry.lua -r capture.pcap -V` and checks that every frame is decoded, with
its fields under SPEC.md's names, and that the corrupted one is flagged as an expert error.

    Tools/wireshark/check.py                  check (exit status 1 with the reasons on failure)
    Tools/wireshark/check.py --write FILE     only write the capture
"""
import os, struct, subprocess, sys, tempfile, zlib

here = os.path.dirname(os.path.abspath(__file__))
MAGIC = b"\x89FERRY\r\n"


def frame(kind, payload=b"", corrupt=False):
    header = struct.pack(">BBQ", kind, 0, len(payload))
    crc = zlib.crc32(header + payload) & 0xFFFFFFFF
    return header + payload + struct.pack(">I", crc ^ (1 if corrupt else 0))


def string(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def hello(maximum, file_size):
    return frame(0x01, struct.pack(">HHQQ", 1, maximum, 1 << 20, file_size))


TOKEN = bytes.fromhex("00112233445566778899aabbccddeeff")
MODIFIED = 1_700_000_000_000_000_000
DOWNLOAD = bytes((i * 7) & 0xFF for i in range(300_000))
download_crc = zlib.crc32(DOWNLOAD) & 0xFFFFFFFF
UPLOAD = b"##\n"
upload_crc = zlib.crc32(UPLOAD) & 0xFFFFFFFF

# (direction, bytes): "c" client to server, "s" server to client.
session = [
    ("c", MAGIC + hello(4, 2**64 - 1)),
    ("s", MAGIC + hello(4, 1 << 40)),
    ("c", frame(0x16, string("alice") + string("s3cret"))),
    ("s", frame(0x20)),
    ("c", frame(0x10)),
    ("s", frame(0x22, struct.pack(">I", 2) + struct.pack(">Qq", 5, MODIFIED) + string("a.txt")
                + struct.pack(">Qq", 300_000, MODIFIED) + string("notes.txt"))
          + frame(0x23, struct.pack(">Q", 2))),
    ("c", frame(0x11, struct.pack(">Q", 0) + string("notes.txt"))),
    ("s", frame(0x24, struct.pack(">QQq", 300_000, 0, MODIFIED)) + frame(0x30, DOWNLOAD)
          + frame(0x31, struct.pack(">QII", 300_000, download_crc, download_crc))),
    ("c", frame(0x12, struct.pack(">QQB", 3, 0, 1) + string("photo.jpg"))),
    ("s", frame(0x25, struct.pack(">Q", 0))),
    ("c", frame(0x30, UPLOAD) + frame(0x31, struct.pack(">QI", 3, upload_crc))),
    ("s", frame(0x20)),
    ("c", frame(0x12, struct.pack(">QQB", 400_000, 400_000, 0) + string("big.bin") + TOKEN)),
    ("s", frame(0x25, struct.pack(">Q", 262_144) + TOKEN)),
    ("c", frame(0x32)),
    ("s", frame(0x21, struct.pack(">H", 106) + string("the upload of 'big.bin' was aborted by the client"))),
    ("c", frame(0x11, struct.pack(">Q", 0) + string("missing.txt"))),
    ("s", frame(0x21, struct.pack(">H", 100) + string("no such file: 'missing.txt'"))),
    ("c", frame(0x15, b"\x00" + string("a.txt") + string("b.txt"))),
    ("s", frame(0x20)),
    ("c", frame(0x14, string("b.txt"))),
    ("s", frame(0x20)),
    ("c", frame(0x13)),
    ("s", frame(0x20)),
]
corrupted = [
    ("c", MAGIC + hello(4, 2**64 - 1)),
    ("s", MAGIC + hello(4, 1 << 40)),
    ("c", frame(0x10, corrupt=True)),
    ("s", frame(0x21, struct.pack(">H", 203) + string("frame of type 0x10 carries a wrong CRC-32"))),
]

# Segment sizes, in turn: cuts inside the magic, inside frame headers, and across payloads.
PATTERN = [5, 9, 13, 1448, 3, 1448, 1448, 700]


def ipv4_checksum(header):
    total = sum(struct.unpack(">10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packet(source_port, destination_port, sequence, acknowledgement, flags, payload=b""):
    tcp = struct.pack(">HHIIBBHHH", source_port, destination_port, sequence, acknowledgement, 5 << 4, flags,
                      65535, 0, 0)
    length = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, 0, 0x4000, 64, 6, 0, bytes([127, 0, 0, 1]),
                     bytes([127, 0, 0, 1]))
    ip = ip[:10] + struct.pack(">H", ipv4_checksum(ip)) + ip[12:]
    return ip + tcp + payload


def connection(exchanges, client_port, server_port=8888):
    """The packets of one TCP connection carrying `exchanges`."""
    SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
    sequence = {"c": 1000, "s": 5000}
    ports = {"c": (client_port, server_port), "s": (server_port, client_port)}
    out = [packet(client_port, server_port, 999, 0, SYN), packet(server_port, client_port, 4999, 1000, SYN | ACK),
           packet(client_port, server_port, 1000, 5000, ACK)]
    cut = 0
    for direction, data in exchanges:
        other = "s" if direction == "c" else "c"
        position = 0
        while position < len(data):
            size = PATTERN[cut % len(PATTERN)]
            cut += 1
            chunk = data[position:position + size]
            out.append(packet(*ports[direction], sequence[direction], sequence[other], PSH | ACK, chunk))
            sequence[direction] += len(chunk)
            position += len(chunk)
    out.append(packet(*ports["c"], sequence["c"], sequence["s"], FIN | ACK))
    out.append(packet(*ports["s"], sequence["s"], sequence["c"] + 1, FIN | ACK))
    return out


def write_capture(path):
    # The second connection is to another port: recognised by its magic (the heuristic dissector).
    packets = connection(session, 40000) + connection(corrupted, 40001, server_port=9000)
    with open(path, "wb") as capture:
        capture.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))  # LINKTYPE_RAW
        for number, data in enumerate(packets):
            capture.write(struct.pack("<IIII", 1_700_000_000 + number // 1000, (number % 1000) * 1000, len(data),
                                      len(data)))
            capture.write(data)
    return len(packets)


EXPECTED = [
    # The handshake, both ways.
    "Ferry magic", "Type: HELLO (0x01)", "max_version: 4", "max_frame_payload: 1048576", "max_file_size: 1099511627776",
    # Requests and replies, with their fields.
    "Type: AUTH (0x16)", 'user: alice', "password (bytes; not shown): 6",
    "Type: LIST (0x10)", "Type: LIST_ENTRIES (0x22)", "entry: notes.txt, 300000 bytes", "(2023-11-14T22:13:20Z)",
    "Type: LIST_END (0x23)", "Type: RETR (0x11)", "name: notes.txt", "Type: FILE_INFO (0x24)", "size: 300000",
    "Type: DATA (0x30)", "data length: 300000", "Type: END (0x31)", "file_crc: 0x%08x" % download_crc,
    "Type: STOR (0x12)", "name: photo.jpg", "options: 0x01", "Type: READY (0x25)", "offset: 262144",
    "token: 00112233445566778899aabbccddeeff", "Type: ABORT (0x32)", "Type: ERROR (0x21)",
    "code: no such file (100)", "message: no such file: 'missing.txt'", "code: aborted (106)",
    "Type: RENAME (0x15)", "from: a.txt", "to: b.txt", "Type: DELETE (0x14)", "Type: OK (0x20)", "Type: EXIT (0x13)",
    # The corrupted frame.
    "Frame CRC-32 mismatch", "code: bad checksum (203)",
]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_capture(sys.argv[2])
        return 0
    with tempfile.TemporaryDirectory() as folder:
        capture = os.path.join(folder, "ferry.pcap")
        write_capture(capture)
        run = subprocess.run(["tshark", "-n", "-X", "lua_script:" + os.path.join(here, "ferry.lua"), "-r", capture,
                              "-V", "-o", "tcp.desegment_tcp_streams:TRUE"],
                             capture_output=True, text=True, timeout=120)
    output = run.stdout
    failures = []
    if run.returncode != 0:
        failures.append("tshark exited with %d: %s" % (run.returncode, run.stderr.strip()[-2000:]))
    if "Lua" in run.stderr and "rror" in run.stderr:
        failures.append("Lua error: " + run.stderr.strip()[-2000:])
    for text in EXPECTED:
        if text not in output:
            failures.append("not in the decoded output: " + text)
    frames = output.count("Ferry file transfer protocol, ")
    wanted = sum(1 for _, data in session + corrupted for _ in frames_in(data))
    if frames != wanted:
        failures.append("%d frames decoded, %d in the capture" % (frames, wanted))
    bad = output.count("[BAD CRC]") + output.count("[incorrect, should be")
    if bad != 2:  # the summary and the CRC field of the one corrupted frame
        failures.append("expected exactly the one corrupted frame flagged, found %d marks" % bad)
    if output.count("Expert Info (Error/Checksum)") != 1:
        failures.append("expected one checksum expert error, found %d" % output.count("Expert Info (Error/Checksum)"))
    if failures:
        print("\n".join(failures))
        print("--- tshark stderr ---\n" + run.stderr[-3000:])
        return 1
    print("dissector ok: %d frames decoded with their fields, the corrupted one flagged" % frames)
    return 0


def frames_in(data):
    if data.startswith(MAGIC):
        data = data[len(MAGIC):]
    while data:
        length = struct.unpack(">Q", data[2:10])[0]
        yield data[:14 + length]
        data = data[14 + length:]


if __name__ == "__main__":
    sys.exit(main())
