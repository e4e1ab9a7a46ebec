#!/usr/bin/env bash
# Ferry against the seed, vsftpd and pyftpdlib on this machine, in one interleaved run (see bench.py).
#
#   Benchmarks/run.sh            full run: tmpfs (/dev/shm) and then the disk, 3 rounds each
#   Benchmarks/run.sh --quick    smaller sizes, tmpfs only, 3 rounds: a few minutes
#
# Installs what it needs (Debian: vsftpd lftp curl iperf3; PyPI: pyftpdlib), builds Ferry in release mode, prints
# markdown tables of medians and ratios against the best peer, and writes the raw numbers to Benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in vsftpd lftp curl iperf3; do
    command -v "$tool" > /dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
python3 -c "import pyftpdlib" 2> /dev/null || pip install -q pyftpdlib

# Release binaries with the Swift runtime linked in, as one would deploy them (they start about 4 ms faster than
# ones that load the toolchain's shared libraries, which shows in every one-shot `ferry` command).
build=(-c release --static-swift-stdlib --scratch-path .build-static)
swift build "${build[@]}" > /dev/null
bin=$(swift build "${build[@]}" --show-bin-path)
mkdir -p Benchmarks/results

if [ "${1:-}" = "--quick" ]; then
    python3 Benchmarks/bench.py --bin "$bin" --rounds 3 --bulk-mib 256 --small-files 300 --list-entries 10000 \
        --sessions 200 --memory-gib 1 --raw Benchmarks/results/quick.json
    exit
fi

echo "## tmpfs"
python3 Benchmarks/bench.py --bin "$bin" --base /dev/shm --label tmpfs --raw Benchmarks/results/tmpfs.json
echo "## disk"
mkdir -p /var/tmp/ferry-bench
python3 Benchmarks/bench.py --bin "$bin" --base /var/tmp/ferry-bench --label disk --sessions 200 --memory-gib 1 \
    --raw Benchmarks/results/disk.json
