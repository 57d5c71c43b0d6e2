#!/usr/bin/env bash
# Filters through tunnels under load: a bounded TCP transfer (iperf3, 1 GiB) crosses the VXLAN
# overlay from pod-a to pod-c while 5 pings do too, and `dye capture icmp` runs on the pods'
# eth0, both nodes' eth0 and the underlay bridge — once through tunnels (the default), once with
# --outer. Reports the ICMP copies kept per point, kernel drops, CPU and peak RSS (GNU time).
#
#   scripts/bench-tunnels.sh           # uses target/release/dye (builds it if missing)
#
# Needs root, iperf3, GNU time. Everything happens inside lab namespaces (dye-btun<pid>-*),
# removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DYE=${DYE:-}
if [[ -z "$DYE" ]]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    DYE=$TARGET/release/dye
    [[ -x "$DYE" ]] || (cd "$ROOT" && cargo build --release -p dye-tracer)
fi
ID=btun$(( $$ % 100000 ))
OUT=$(mktemp -d /tmp/dye-bench-tunnels.XXXXXX)

cleanup() {
    "$DYE" lab down "$ID" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

ns() { echo "dye-$ID-$1"; }
"$DYE" lab up --id "$ID" >/dev/null
POD_C=$(ip -n "$(ns pod-c)" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
POINTS=(-i "$(ns pod-a)/eth0" -i "$(ns node-1)/eth0" -i "$(ns underlay)/br0"
        -i "$(ns node-2)/eth0" -i "$(ns pod-c)/eth0")

run() { # $1: label, rest: extra capture flags
    local label=$1; shift
    ip netns exec "$(ns pod-c)" timeout 30 iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    sleep 0.5
    /usr/bin/time -f "cpu user %U s, sys %S s, peak RSS %M KiB" \
        "$DYE" capture "${POINTS[@]}" -w "$OUT/$label.pcapng" --duration 8s "$@" icmp \
        2>"$OUT/$label.txt" &
    local cap=$!
    sleep 1
    ip netns exec "$(ns pod-a)" ping -c 5 -i 0.5 "$POD_C" >/dev/null &
    ip netns exec "$(ns pod-a)" timeout 20 iperf3 -c "$POD_C" -p 5201 -n 1G | grep -E 'sender'
    wait
    echo "== $label"
    grep -v 'capturing on' "$OUT/$label.txt"
}

run through
run outer --outer
