#!/usr/bin/env bash
# Builds every harness and runs each for SECONDS (default 60), one after the other.
#
#   Fuzz/run.sh [SECONDS]                   ASan + libFuzzer, debug (the default; what CI runs)
#   FERRY_FUZZ_MODE=fast Fuzz/run.sh 600    libFuzzer only, release: ~10× the executions, no memory checks
#   FERRY_FUZZ_HARNESSES="FuzzServerSession" Fuzz/run.sh 60     a subset
#
# Before fuzzing, every input in FailCases/HARNESS/ is replayed: fixed crashers must stay fixed. Exits non-zero if
# any harness crashes, leaks, runs out of memory or times out; the input that did it is left in artifacts/HARNESS/.
# Prints executions per second and the total for each harness.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
mode=${FERRY_FUZZ_MODE:-asan}
read -r -a harnesses <<< "${FERRY_FUZZ_HARNESSES:-FuzzFrameParser FuzzMessageDecoder FuzzRoundTrip FuzzServerSession FuzzClientReplies}"

case "$mode" in
    asan) build=(--scratch-path .build-fuzz -c debug --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address) ;;
    fast) build=(--scratch-path .build-fuzz-fast -c release --sanitize=fuzzer -Xswiftc -sanitize=fuzzer) ;;
    *) echo "run.sh: FERRY_FUZZ_MODE must be asan or fast" >&2; exit 2 ;;
esac

echo "fuzz: building the harnesses ($mode)"
if ! swift build "${build[@]}" 2>&1 | grep -v "Cannot export local symbol" | tail -3; then
    echo "fuzz: build failed" >&2
    exit 1
fi
bin=$(swift build "${build[@]}" --show-bin-path)

export SWIFT_BACKTRACE=enable=no
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp:print_suppressions=0"
failed=0
summary=()
for harness in "${harnesses[@]}"; do
    work="corpus-work/$harness"
    artifacts="artifacts/$harness"
    mkdir -p "$work" "$artifacts" "Corpus/$harness"
    if compgen -G "FailCases/$harness/*" > /dev/null; then
        echo "fuzz: $harness: replaying FailCases/$harness"
        if ! "$bin/$harness" -runs=1 FailCases/"$harness"/* > "$artifacts/replay.log" 2>&1; then
            echo "fuzz: $harness FAILED on a known crasher (see $artifacts/replay.log)"
            failed=1
            continue
        fi
    fi
    echo "fuzz: $harness for ${seconds}s"
    "$bin/$harness" "$work" "Corpus/$harness" \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=512 \
        -dict=ferry.dict -artifact_prefix="$artifacts/" -print_final_stats=1 -close_fd_mask=1 \
        > "$artifacts/fuzz.log" 2>&1
    status=$?
    runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$artifacts/fuzz.log")
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$artifacts/fuzz.log")
    coverage=$(grep -o 'cov: [0-9]*' "$artifacts/fuzz.log" | tail -1 | awk '{print $2}')
    if [ $status -ne 0 ]; then
        failed=1
        echo "fuzz: $harness FAILED (exit $status):"
        grep -E "ERROR|SUMMARY|Fatal error|panic|deadly|Test unit written" "$artifacts/fuzz.log" | head -10
    fi
    summary+=("| $harness | ${rate:-?} | ${runs:-?} | ${coverage:-?} | $([ $status -eq 0 ] && echo ok || echo FAILED) |")
done

echo
echo "| harness ($mode, ${seconds}s each) | exec/s | executions | coverage | result |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${summary[@]}"
exit $failed
