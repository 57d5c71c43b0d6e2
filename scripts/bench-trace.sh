#!/usr/bin/env bash
# dye trace wall time, CPU time (user+sys) and peak RSS of two builds, interleaved on one lab,
# RUNS runs per case (default 5), then the medians:
#   bash scripts/bench-trace.sh OLD_DYE NEW_DYE
# e.g. a release build of an earlier commit (git worktree add /tmp/old REV; cargo build
# --release there) against target/release/dye. Needs root (the lab). ID=… picks the lab id
# (default pf), so two runs on one machine do not share a lab.
set -euo pipefail
old=${1:?usage: bench-trace.sh OLD_DYE NEW_DYE}; new=${2:?usage: bench-trace.sh OLD_DYE NEW_DYE}
id=${ID:-pf}
$new lab down "$id" >/dev/null 2>&1 || true
echo "case build wall_s cpu_s maxrss_kib"
$new lab up --id "$id" >/dev/null
trap '$new lab down "$id" >/dev/null 2>&1' EXIT
run() { /usr/bin/time -f "%e %U %S %M" "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%s %.2f %s", $1, $2 + $3, $4}'; }
for case in icmp tcp; do
  for _ in $(seq "${RUNS:-5}"); do
    for bin in old new; do
      b=${!bin}
      if [[ $case == icmp ]]; then r=$(run $b trace --from dye-$id-pod-a --to 10.244.2.2); else r=$(run $b trace --from dye-$id-pod-b --to 10.96.0.10:80 --count 10 --interval 20ms); fi
      echo "$case $bin $r"
    done
  done
done | tee /dev/stderr | awk '{w[$1" "$2]=w[$1" "$2]" "$3; c[$1" "$2]=c[$1" "$2]" "$4}
  function median(list,   n, a, i, j, t) { n = split(list, a, " ");
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END { for (k in w) printf "median %s: wall %.2f s, cpu %.2f s\n", k, median(w[k]), median(c[k]) }' | sort

