#!/usr/bin/env bash
# tests/test_bench_host.sh — `numaspan bench host --cpu-clock` measures per cpu-second of the
# process, not per wall second: the point of the flag is that a run descheduled for a while (the
# 2-CPU VM shared with other jobs) does not read as a slow allocator. Checked by pinning a run
# onto one cpu beside a busy loop pinned there too: its wall-clock metric falls to about half, its
# cpu-clock one does not (asserted: cpu-clock > 1.4x wall-clock). And the driver passes the flag
# on to its children and says so above its table.
# usage: test_bench_host.sh <path to bench_host>
set -u
bench=$1
fail=0
value() { sed -E -n 's/.*"value": ([0-9.e+-]+).*/\1/p'; }
cpu=$(taskset -pc $$ 2>/dev/null | sed -E 's/.*: *([0-9]+).*/\1/')
if [ -z "$cpu" ]; then
  echo "test_bench_host: skipped: taskset cannot read this shell's cpus"
  exit 77
fi
taskset -c "$cpu" sh -c 'while :; do :; done' &
busy=$!
trap 'kill $busy 2>/dev/null' EXIT
wall=$(taskset -c "$cpu" "$bench" run loops --threads 1 --seconds 0.3 | value)
cpuv=$(taskset -c "$cpu" "$bench" run loops --threads 1 --seconds 0.3 --cpu-clock | value)
kill $busy 2>/dev/null
echo "loops beside a busy loop on cpu $cpu: $wall Mpairs/s wall clock, $cpuv per cpu-second"
if ! awk -v w="$wall" -v c="$cpuv" 'BEGIN { exit !(w > 0 && c > 1.4 * w) }'; then
  echo "FAIL: --cpu-clock ($cpuv) is not above 1.4x the wall-clock value ($wall)"
  fail=1
fi
out=$("$bench" --cpu-clock --only pairs-16 --reps 1 --seconds 0.05 --allocators glibc 2>&1)
if ! grep -q "cpu-clock: each metric per cpu-second" <<<"$out"; then
  echo "FAIL: the driver's table does not say it is per cpu-second:"; echo "$out"; fail=1
fi
if ! grep -qE "^pairs-16 +ns/pair +[0-9.]+" <<<"$out"; then
  echo "FAIL: no pairs-16 row under --cpu-clock (children refused the flag?):"; echo "$out"; fail=1
fi
exit $fail
