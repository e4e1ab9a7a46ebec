#!/usr/bin/env bash
# Ferry over TLS against OpenSSH's sftp and against plain Ferry (see secure.py).
#
#   Benchmarks/secure.sh            1 GiB up and down, 1,000 × 4 KiB up and down, 3 rounds, on tmpfs
#   Benchmarks/secure.sh --quick    256 MiB and 300 files
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/sbin/sshd ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq openssh-server openssh-client
fi
build=(-c release --static-swift-stdlib --scratch-path .build-static)
swift build "${build[@]}" > /dev/null
bin=$(swift build "${build[@]}" --show-bin-path)
mkdir -p Benchmarks/results
if [ "${1:-}" = "--quick" ]; then
    python3 Benchmarks/secure.py --bin "$bin" --bulk-mib 256 --small-files 300 --raw Benchmarks/results/secure-quick.json
else
    python3 Benchmarks/secure.py --bin "$bin" --raw Benchmarks/results/secure.json
fi
