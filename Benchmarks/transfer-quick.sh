#!/usr/bin/env bash
# Quick side-by-side on loopback: `ferry get`/`ferry put` of a 1 GiB file against the seed's RETR/STOR, and
# ferryd's resident memory while moving a 4 MiB and a 4 GiB file, against idle.
#
#   Benchmarks/transfer-quick.sh [ROUNDS]      (default 3; files on /dev/shm when it exists)
#
# Prints medians of interleaved rounds (ferry, seed, ferry, seed, ...). Needs python3 for the seed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seed_dir=$(realpath ../shared/seed 2>/dev/null || echo ../shared/seed)

swift build -c release >/dev/null
bin=$(swift build -c release --show-bin-path)
base=/dev/shm; [ -d "$base" ] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/ferry-bench.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/ferry-lib" "$work/seed-lib" "$work/client"
head -c $((1 << 30)) /dev/urandom > "$work/client/big.bin"
head -c $((4 << 20)) /dev/urandom > "$work/client/small4m.bin"

"$bin/ferryd" --root "$work/ferry-lib" --host 127.0.0.1 --port 0 --log-level warning > "$work/ferryd.out" &
pids+=($!); ferryd_pid=$!
for _ in $(seq 100); do grep -q listening "$work/ferryd.out" 2>/dev/null && break; sleep 0.05; done
ferry_port=$(grep -o '127.0.0.1:[0-9]*' "$work/ferryd.out" | cut -d: -f2)

seed_port=""
if [ -f "$seed_dir/seed_server.py" ]; then
    seed_port=$((20000 + RANDOM % 20000))
    python3 "$seed_dir/seed_server.py" "$seed_port" "$work/seed-lib/" > /dev/null 2>&1 &
    pids+=($!)
    sleep 0.5
fi

now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1 / ($3 - $2) / 1e6:.0f}')"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Samples the peak RSS of a process while a command runs.
peak_rss_during() {
    local pid=$1; shift
    local peak_file="$work/peak"; echo 0 > "$peak_file"
    ( peak=0; while kill -0 "$pid" 2>/dev/null; do r=$(rss_kib "$pid"); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.02; done ) &
    local sampler=$!
    "$@" > /dev/null
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    cat "$peak_file"
}

size=$((1 << 30))
ferry_put=(); ferry_get=(); seed_put=(); seed_get=()
for round in $(seq "$rounds"); do
    rm -f "$work/ferry-lib/big.bin" "$work/client/got.bin"
    t0=$(now); "$bin/ferry" put "$work/client/big.bin" --port "$ferry_port" > /dev/null; t1=$(now)
    ferry_put+=("$(mbps $size "$t0" "$t1")")
    t0=$(now); "$bin/ferry" get big.bin --output "$work/client/got.bin" --port "$ferry_port" > /dev/null; t1=$(now)
    ferry_get+=("$(mbps $size "$t0" "$t1")")
    cmp -s "$work/client/big.bin" "$work/client/got.bin" || { echo "ferry: downloaded file differs"; exit 1; }
    if [ -n "$seed_port" ]; then
        rm -f "$work/seed-lib/big.bin" "$work/client/big.bin.seed"
        t0=$(now); printf 'put %s\nexit\n' "$work/client/big.bin" | python3 "$seed_dir/seed_client.py" "$seed_port" > /dev/null 2>&1 || true
        # The seed's STOR is done when the server has written every byte.
        while [ "$(stat -c %s "$work/seed-lib/big.bin" 2>/dev/null || echo 0)" -lt "$size" ]; do sleep 0.01; done; t1=$(now)
        seed_put+=("$(mbps $size "$t0" "$t1")")
        mkdir -p "$work/client/seed-get"; rm -f "$work/client/seed-get/big.bin"
        t0=$(now); (cd "$work/client/seed-get" && printf 'get big.bin\nexit\n' | python3 "$(realpath "$seed_dir")/seed_client.py" "$seed_port" > /dev/null 2>&1 || true); t1=$(now)
        seed_get+=("$(mbps $size "$t0" "$t1")")
    fi
done

echo "| 1 GiB over loopback ($base), median of $rounds | MB/s |"
echo "|---|---:|"
echo "| ferry put (STOR, verified, fsync'ed) | $(median "${ferry_put[@]}") |"
echo "| ferry get (RETR, verified, fsync'ed) | $(median "${ferry_get[@]}") |"
if [ -n "$seed_port" ]; then
    echo "| seed STOR | $(median "${seed_put[@]}") |"
    echo "| seed RETR | $(median "${seed_get[@]}") |"
fi

# Memory: idle, then peaks while moving 4 MiB and 4 GiB each way.
"$bin/ferry" list --port "$ferry_port" > /dev/null
idle=$(rss_kib "$ferryd_pid")
rm -f "$work/client/big.bin" "$work/ferry-lib/big.bin" "$work/client/got.bin"
head -c $((4 << 30)) /dev/zero > "$work/client/huge.bin"
small_put=$(peak_rss_during "$ferryd_pid" "$bin/ferry" put "$work/client/small4m.bin" --port "$ferry_port")
small_get=$(peak_rss_during "$ferryd_pid" "$bin/ferry" get small4m.bin --output "$work/client/s.bin" --port "$ferry_port")
huge_put=$(peak_rss_during "$ferryd_pid" "$bin/ferry" put "$work/client/huge.bin" --port "$ferry_port")
rm -f "$work/client/huge.bin"
huge_get=$(peak_rss_during "$ferryd_pid" "$bin/ferry" get huge.bin --output "$work/client/h.bin" --port "$ferry_port")
echo
echo "| ferryd RSS | KiB |"
echo "|---|---:|"
echo "| idle (after one LIST) | $idle |"
echo "| peak, STOR 4 MiB | $small_put |"
echo "| peak, RETR 4 MiB | $small_get |"
echo "| peak, STOR 4 GiB | $huge_put |"
echo "| peak, RETR 4 GiB | $huge_get |"
