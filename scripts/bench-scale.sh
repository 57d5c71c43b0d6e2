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
labs_down() {
  "$dye" lab down "$plain" >/dev/null 2>&1 || true
  "$dye" lab down "$busy" >/dev/null 2>&1 || true
}
labs_down
topo=$(mktemp --suffix .toml)
out=$(mktemp -d)
trap 'labs_down; rm -rf "$topo" "$out"' EXIT
# The built-in topology with idle pods on node-1 only (the source node).
sed "/^name = \"node-1\"/a idle_pods = $idle" samples/lab/cluster.toml >"$topo"
grep -q "^idle_pods = $idle" "$topo"
"$dye" lab up --id "$plain" >/dev/null
t0=$(date +%s%N)
"$dye" lab up --id "$busy" --topology "$topo" >/dev/null
echo "# busy lab ($idle idle pods on node-1) built in $((($(date +%s%N) - t0) / 1000000)) ms"

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
      facts=$(jq -r '[.verdict.kind, (.scope.namespaces | length), .scope.capture_sockets,
        .scope.interfaces, (.capture | length)] | map(tostring) | join(" ")' "$json")
      echo "$case $sockets $run $tv $facts"
    done
  done
done | tee "$out/rows"

echo
echo "# medians (busy/plain ratio)"
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for sockets in per-namespace per-interface; do
  for case in plain "idle$idle"; do
    rows=$(awk -v c="$case" -v s="$sockets" '$1 == c && $2 == s' "$out/rows")
    wall=$(awk '{print $4}' <<<"$rows" | median)
    rss=$(awk '{print $5}' <<<"$rows" | median)
    read -r _ _ _ _ _ _ _ socks ifaces listed <<<"$(head -1 <<<"$rows")"
    printf '%-14s %-8s wall %.2f s  peak RSS %.1f MiB  sockets %s  interfaces %s  listed points %s\n' \
      "$sockets" "$case" "$wall" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$socks" "$ifaces" "$listed"
    eval "wall_$case=$wall rss_$case=$rss"
  done
  w0=wall_plain w1=wall_idle$idle r0=rss_plain r1=rss_idle$idle
  awk -v s="$sockets" -v w0="${!w0}" -v w1="${!w1}" -v r0="${!r0}" -v r1="${!r1}" \
    'BEGIN {printf "%-14s busy/plain: wall x%.2f, peak RSS x%.2f\n", s, w1 / w0, r1 / r0}'
done
