#!/usr/bin/env bash
# dye trace wall time and peak RSS of two builds, interleaved on one lab, 5 runs per case:
#   bash scripts/bench-trace.sh OLD_DYE NEW_DYE
# e.g. a release build of an earlier commit (git worktree add /tmp/old REV; cargo build
# --release there) against target/release/dye. Needs root (the lab).
set -euo pipefail
old=${1:?usage: bench-trace.sh OLD_DYE NEW_DYE}; new=${2:?usage: bench-trace.sh OLD_DYE NEW_DYE}
$new lab down pf >/dev/null 2>&1 || true
echo "case build wall_s maxrss_kib"
$new lab up --id pf >/dev/null
trap '$new lab down pf >/dev/null 2>&1' EXIT
run() { /usr/bin/time -f "%e %M" "$@" 2>&1 >/dev/null | tail -1; }
for case in icmp tcp; do
  for i in 1 2 3 4 5; do
    for bin in old new; do
      b=${!bin}
      if [[ $case == icmp ]]; then r=$(run $b trace --from dye-pf-pod-a --to 10.244.2.2); else r=$(run $b trace --from dye-pf-pod-b --to 10.96.0.10:80 --count 10 --interval 20ms); fi
      echo "$case $bin $r"
    done
  done
done

