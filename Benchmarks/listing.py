#!/usr/bin/env python3
"""Listings of 10,000 files, whole processes, one hyperfine run (issue #18): `ferry list`, `ferry list --json`, and
curl's LIST from vsftpd, as scripts would use each.

    Benchmarks/listing.py BIN_DIR [--entries N] [--runs N]     (BIN_DIR holds a release ferryd and ferry)

Writes the figures to stdout and Benchmarks/results/listing.json.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Ferry, Vsftpd  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--entries", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=30)
    arguments = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ferry-listing-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    systems = []
    try:
        ferry = Ferry(work, os.path.abspath(arguments.bin_dir))
        vsftpd = Vsftpd(work)
        systems = [ferry, vsftpd]
        for system in systems:
            for index in range(arguments.entries):
                with open(os.path.join(system.library, "file-%05d.dat" % index), "wb") as f:
                    f.write(b"x" * ((index * 37) % 5000))
        ferry_bin = os.path.join(os.path.abspath(arguments.bin_dir), "ferry")
        commands = {
            "ferry list": f"{ferry_bin} list --port {ferry.port}",
            "ferry list --json": f"{ferry_bin} list --json --port {ferry.port}",
            "curl LIST (vsftpd)": f"curl -s ftp://127.0.0.1:{vsftpd.port}/",
        }
        export = os.path.join(work, "hyperfine.json")
        subprocess.run(
            ["hyperfine", "-N", "-w", "5", "-r", str(arguments.runs), "--export-json", export]
            + [part for name, command in commands.items() for part in ("-n", name, command)],
            check=True, stdout=subprocess.DEVNULL)
        results = {r["command"]: r for r in json.load(open(export))["results"]}
        curl = results["curl LIST (vsftpd)"]["mean"]
        rows = []
        for name in commands:
            r = results[name]
            rows.append({"command": name, "mean_ms": round(r["mean"] * 1000, 2), "stddev_ms": round(r["stddev"] * 1000, 2),
                         "user_ms": round(r["user"] * 1000, 2), "system_ms": round(r["system"] * 1000, 2),
                         "vs_curl": round(r["mean"] / curl, 2)})
        print(f"| {arguments.entries} entries, {arguments.runs} runs | mean | ± | user | system | × curl LIST |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['command']} | {row['mean_ms']} ms | {row['stddev_ms']} | {row['user_ms']} ms | "
                  f"{row['system_ms']} ms | {row['vs_curl']} |")
        os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
        with open(os.path.join(os.path.dirname(__file__), "results", "listing.json"), "w") as f:
            json.dump({"entries": arguments.entries, "runs": arguments.runs, "rows": rows}, f, indent=1)
    finally:
        for system in systems:
            system.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
