#!/usr/bin/env bash
# The floors of a transfer on this machine (see upload-floor.c): DATA frames of 1 MiB over loopback, checked with
# zlib's CRC-32, by a C sender and receiver with no protocol, event loop or task around them.
#
#   Benchmarks/upload-floor.sh [ROUNDS] [MiB]      (default 3 rounds of 1024 MiB, on /dev/shm)
#
# Uploads: each sender mode against the one-thread receiver (compare with `bulk STOR` in bench.py). Downloads: the
# sender as ferryd sends (CRCs known, `sendfile`) against each receiver: one thread; two threads (read and check, then
# write); two threads reading into a ring (no copy at all but the kernel's); the same with the CRC split between the
# threads. Compare with `bulk RETR`. Prints wall time and CPU per GiB for each side.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
mib=${2:-1024}
work=$(mktemp -d /dev/shm/ferry-floor.XXXXXX)
receiver=""
cleanup() {
    if [ -n "$receiver" ]; then kill "$receiver" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -Wall -Wextra -o "$work/upload-floor" Benchmarks/upload-floor.c -lz -lpthread
head -c $((mib << 20)) /dev/urandom > "$work/source"
port=$((20000 + RANDOM % 20000))
# One transfer: a receiver in mode $1, a sender in mode $2, the copy compared with the source. The `cached` sender's
# own figures are not printed: they include its CRCs, computed before its clock starts.
transfer() {
    "$work/upload-floor" "$1" "$port" "$work/destination" &
    receiver=$!
    if [ "$2" = cached ]; then
        "$work/upload-floor" send "$port" "$work/source" $((1048576 - 14)) "$2" > /dev/null
    else
        "$work/upload-floor" send "$port" "$work/source" $((1048576 - 14)) "$2"
    fi
    wait "$receiver"
    receiver=""
    cmp -s "$work/source" "$work/destination" || { echo "the copy differs"; exit 1; }
    rm -f "$work/destination"
}
for _ in $(seq "$rounds"); do
    for mode in read mmap sendfile; do
        transfer receive "$mode"
    done
done
for _ in $(seq "$rounds"); do
    for mode in receive receive-threaded receive-ring receive-ring-split; do
        transfer "$mode" cached
    done
done
