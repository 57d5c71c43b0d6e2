#!/usr/bin/env bash
# Does a busy node cost more? The same cross-node trace (pod-a on node-1 → pod-c on node-2) on
# two labs built side by side in one run: the plain lab, and one whose source node carries
# IDLE more idle pods on its bridge. Both socket models, RUNS interleaved runs per case, a
# warm-up trace per lab first. Prints wall time and peak RSS (/usr/bin/time), the namespaces in
# scope, the kernel sockets opened and the interfaces covered, then the medians and the
# busy/plain ratios.
#   bash scripts/bench-scale.sh [DYE] [IDLE] [RUNS]     (defaults: target/release/dye 200 5)
# Needs root (the labs). Building the busy lab takes about 20 s per 100 idle pods.
set -euo pipefail
dye=${1:-target/release/dye}
idle=${2:-200}
runs=${3:-5}
plain=scp
busy=scb
topo=$(mktemp --suffix .toml)
out=$(mktemp -d)
cleanup() {
  "$dye" lab down "$plain" >/dev/null 2>&1 || true
  "$dye" lab down "$busy" >/dev/null 2>&1 || true
  rm -rf "$topo" "$out"
}
trap cleanup EXIT
cleanup
topo=$(mktemp --suffix .toml)
out=$(mktemp -d)
# The built-in topology with idle pods on node-1 only (the source node).
sed "/^name = \"node-1\"/a idle_pods = $idle" samples/lab/cluster.toml >"$topo"
grep -q "^idle_pods = $idle" "$topo"
"$dye" lab up --id "$plain" >/dev/null
t0=$(date +%s.%N)
"$dye" lab up --id "$busy" --topology "$topo" >/dev/null
echo "# busy lab ($idle idle pods on node-1) built in $(echo "$(date +%s.%N) - $t0" | bc) s"

pod_c() { ip netns exec "dye-$1-pod-c" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
for lab in $plain $busy; do
  "$dye" trace --from "dye-$lab-pod-a" --to "$(pod_c "$lab")" >/dev/null # warm the caches
done

echo "case sockets run wall_s maxrss_kib verdict namespaces capture_sockets interfaces listed_points"
for run in $(seq 1 "$runs"); do
  for sockets in per-namespace per-interface; do
    for lab in $plain $busy; do
      case=$([[ $lab == "$plain" ]] && echo plain || echo "idle$idle")
      json="$out/$lab-$sockets-$run.json"
      tv=$( { /usr/bin/time -f "%e %M" "$dye" trace --from "dye-$lab-pod-a" --to "$(pod_c "$lab")" \
        --sockets "$sockets" --max-points 100000 --json >"$json"; } 2>&1 | tail -1)
      facts=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
s = r["scope"]
print(r["verdict"]["kind"], len(s["namespaces"]), s["capture_sockets"], s["interfaces"], len(r["capture"]))
' "$json")
      echo "$case $sockets $run $tv $facts"
    done
  done
done | tee "$out/rows"

echo
echo "# medians (busy/plain ratio)"
python3 - "$out/rows" "$idle" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
busy = "idle" + sys.argv[2]
for sockets in ("per-namespace", "per-interface"):
    med = {}
    for case in ("plain", busy):
        sel = [r for r in rows if r[0] == case and r[1] == sockets]
        wall = statistics.median(float(r[3]) for r in sel)
        rss = statistics.median(int(r[4]) for r in sel)
        med[case] = (wall, rss, sel[0][7], sel[0][8], sel[0][9])
        print(f"{sockets:14} {case:8} wall {wall:.2f} s  peak RSS {rss/1024:.1f} MiB  "
              f"sockets {sel[0][7]}  interfaces {sel[0][8]}  listed points {sel[0][9]}")
    w = med[busy][0] / med["plain"][0]
    r = med[busy][1] / med["plain"][1]
    print(f"{sockets:14} busy/plain: wall ×{w:.2f}, peak RSS ×{r:.2f}")
EOF
