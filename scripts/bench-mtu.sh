#!/usr/bin/env bash
# Path MTU discovery, dye mtu against tracepath and scamper (`trace -M`), on the same lab paths in
# one run: the flannel lab (samples/lab/cluster.toml) and the routed shape
# (samples/lab/routed.toml: a router between the nodes' subnets, a VXLAN black hole behind it). For each case: the value found against the truth the topology sets, what each tool
# names as the limit, probes sent (packets the source pod transmitted, from its eth0 counter)
# and wall time. Prints a Markdown table.
#
#   scripts/bench-mtu.sh            # uses target/release/dye (builds it if missing)
#   DYE=path/to/dye scripts/bench-mtu.sh
#
# Needs root, iproute2, iputils-tracepath; installs scamper with apt when it is missing. All
# traffic stays inside lab namespaces (dye-bmtu<pid>-*, dye-bmtu<pid>r-*), removed on exit.
# Before each tool the pod's and the nodes' cached path MTUs are flushed, so every tool starts
# from the same cold state (a node that already learned the router's MTU drops silently). tracepath and scamper
# are bounded by `timeout` (150 s each).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DYE=${DYE:-}
if [[ -z "$DYE" ]]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    DYE=$TARGET/release/dye
    [[ -x "$DYE" ]] || (cd "$ROOT" && cargo build --release -p dye-tracer)
fi
if ! command -v scamper >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq scamper >/dev/null
fi
ID=bmtu$(( $$ % 100000 ))
RID=${ID}r
LAB=$ID
OUT=$(mktemp -d /tmp/dye-bench-mtu.XXXXXX)
cleanup() {
    "$DYE" lab down "$ID" "$RID" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT INT TERM

ns() { echo "dye-$LAB-$1"; }
# The same cold start for every tool: no cached path MTU in pod-a or on the nodes.
reset() {
    local m
    for m in pod-a node-1 node-2; do ip -n "$(ns "$m")" route flush cache 2>/dev/null || true; done
}
tx() { ip netns exec "$(ns pod-a)" cat /sys/class/net/eth0/statistics/tx_packets; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# run TOOL CMD...: runs CMD in pod-a, sets WALL and SENT.
run() {
    local t0 p0
    reset
    p0=$(tx); t0=$(now)
    timeout 150 ip netns exec "$(ns pod-a)" "$@" >"$OUT/out" 2>&1 || true
    WALL=$(secs "$t0" "$(now)"); SENT=$(( $(tx) - p0 ))
}

row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }

echo "| case | truth | tool | found | limit named | packets sent by the pod | wall (s) |"
echo "|---|---|---|---|---|---|---|"
case_run() {
    local name=$1 truth=$2 dst=$3
    run "$DYE" mtu --from "$(ns pod-a)" --to "$dst" --json
    local found limit
    found=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["path_mtu"])' "$OUT/out" 2>/dev/null || echo "error")
    limit=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["limit"] or {}; print((l.get("link","-")+" ("+r["status"]+")").replace("dye-'"$LAB"'-",""))' "$OUT/out" 2>/dev/null || echo "-")
    row "$name" "$truth" "dye mtu" "$found" "$limit" "$SENT" "$WALL"

    run tracepath -n "$dst"
    found=$(grep -o 'pmtu [0-9]*' "$OUT/out" | tail -1 | awk '{print $2}' || true)
    # The hop where tracepath saw the pmtu drop below the local interface's (an address, not
    # a link); none when only the local MTU was reported.
    limit=$(awk '/pmtu/ && !/Resume/ && !/LOCALHOST/ && !/Too many/ {print $2; exit}' "$OUT/out")
    row "$name" "$truth" "tracepath" "${found:-none}" "hop ${limit:--}" "$SENT" "$WALL"

    run scamper -O text -c "trace -M" -i "$dst"
    found=$(grep -o 'mtu: [0-9]*' "$OUT/out" | tail -1 | awk '{print $2}' || true)
    limit=$(awk '/\[\*?mtu:/ {print $2, $NF}' "$OUT/out" | awk 'NR>1 && $2!=prev {print $1; exit} {prev=$2}')
    row "$name" "$truth" "scamper trace -M" "${found:-none}" "hop ${limit:--}" "$SENT" "$WALL"
}

"$DYE" lab up --id "$ID" >/dev/null
POD_C=$(ip -n "$(ns pod-c)" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
OFFICE6=$(ip -n "$(ns office)" -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1)

case_run "healthy overlay" 1450 "$POD_C"
"$DYE" lab fault "$ID" link-mtu pod-a/eth0 1500 >/dev/null
case_run "pod MTU 1500 over a 1450 overlay (ICMP)" 1450 "$POD_C"
"$DYE" lab fault "$ID" clear >/dev/null
"$DYE" lab fault "$ID" link-mtu fw/eth1 1280 >/dev/null
case_run "IPv6 to the office, fw/eth1 1280 (PTB)" 1280 "$OFFICE6"
"$DYE" lab fault "$ID" clear >/dev/null
"$DYE" lab fault "$ID" underlay-mtu 1400 >/dev/null
case_run "underlay 1400, outer DF unset" "1450 (fragmented)" "$POD_C"
"$DYE" lab fault "$ID" vxlan-df >/dev/null
case_run "underlay 1400, outer DF set (black hole)" 1350 "$POD_C"
"$DYE" lab fault "$ID" clear >/dev/null

# The routed shape: the router's port towards node-2 shrunk to 1400, outer DF set.
"$DYE" lab up --id "$RID" --topology "$ROOT/samples/lab/routed.toml" >/dev/null
LAB=$RID
POD_C=$(ip -n "$(ns pod-c)" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
"$DYE" lab fault "$RID" link-mtu router/node-2 1400 >/dev/null
"$DYE" lab fault "$RID" vxlan-df >/dev/null
case_run "routed: router/node-2 1400, outer DF set (black hole behind the router)" 1350 "$POD_C"
