#!/usr/bin/env bash
# The floor of an upload's CPU on this machine (see upload-floor.c): DATA frames of 1 MiB over loopback, checked with
# zlib's CRC-32 on both sides, by a C sender and receiver with no protocol, event loop or thread around them.
#
#   Benchmarks/upload-floor.sh [ROUNDS] [MiB]      (default 3 rounds of 1024 MiB, on /dev/shm)
#
# Prints each sender mode's wall time and CPU per GiB, and the receiver's. Compare with `bulk STOR` in bench.py.
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
gcc -O2 -Wall -Wextra -o "$work/upload-floor" Benchmarks/upload-floor.c -lz
head -c $((mib << 20)) /dev/urandom > "$work/source"
port=$((20000 + RANDOM % 20000))
for _ in $(seq "$rounds"); do
    for mode in read mmap sendfile; do
        "$work/upload-floor" receive "$port" "$work/destination" &
        receiver=$!
        "$work/upload-floor" send "$port" "$work/source" $((1048576 - 14)) "$mode"
        wait "$receiver"
        receiver=""
        cmp -s "$work/source" "$work/destination" || { echo "the copy differs"; exit 1; }
        rm -f "$work/destination"
    done
done
