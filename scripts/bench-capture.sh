#!/usr/bin/env bash
# Capture under load: a bounded, lab-internal background flood crosses the overlay while a
# low-rate probe flow (marked ICMP echo) is captured by dye on 12 capture points in 6
# namespaces, and by tcpdump on one interface with the same kernel filter, at the same time.
# Reports probes missed, kernel drops, and CPU / peak RSS of both (GNU time -v).
#
#   scripts/bench-capture.sh            # uses target/release/dye (builds it if missing)
#   DYE=path/to/dye PROBES=200 FLOOD_SECS=20 scripts/bench-capture.sh
#
# Needs root, iproute2, tcpdump, tshark, GNU time. Everything happens inside lab namespaces
# (dye-bench<pid>-*), removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DYE=${DYE:-}
if [[ -z "$DYE" ]]; then
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
    DYE=$TARGET/release/dye
    [[ -x "$DYE" ]] || (cd "$ROOT" && cargo build --release -p dye-tracer)
fi
PROBES=${PROBES:-100}          # probe echo requests, 10 per second
FLOOD_SECS=${FLOOD_SECS:-15}   # each flood stream stops after this long...
FLOOD_COUNT=${FLOOD_COUNT:-2000000} # ...or this many packets
ID=bench$(( $$ % 100000 ))
OUT=$(mktemp -d /tmp/dye-bench-capture.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
    "$DYE" lab down "$ID" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

ns() { echo "dye-$ID-$1"; }
addr() { ip -n "$(ns "$1")" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }

"$DYE" lab up --id "$ID" >/dev/null
POD_A=$(addr pod-a); POD_B=$(addr pod-b); POD_C=$(addr pod-c); POD_D=$(addr pod-d)
VETH_A=$(ip -n "$(ns node-1)" -o link show master cni0 | awk -F': ' '{print $2}' | cut -d@ -f1 | head -1)

# The probe marker: the last 4 bytes of every probe frame, whatever the encapsulation depth.
MARK=d7e0d7e0
FILTER=${FILTER:-"(icmp or udp port 8472) and ether[len - 4:4] = 0x$MARK"}  # FILTER=... for an unselective run

POINTS=(
    "$(ns pod-a)/eth0" "$(ns node-1)/$VETH_A" "$(ns node-1)/cni0" "$(ns node-1)/flannel.1"
    "$(ns node-1)/eth0" "$(ns underlay)/node-1" "$(ns underlay)/br0" "$(ns underlay)/node-2"
    "$(ns node-2)/eth0" "$(ns node-2)/flannel.1" "$(ns node-2)/cni0" "$(ns pod-c)/eth0"
)
IARGS=()
for p in "${POINTS[@]}"; do IARGS+=(-i "$p"); done
CAP_SECS=$(( PROBES / 10 + 6 ))

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "dye: $DYE"
echo "points: ${#POINTS[@]}   probes: $PROBES (10/s)   flood: 3 x ping -f -s 1000 for ${FLOOD_SECS}s"

# Capturers first (both with the same kernel filter), then the flood, then the probes.
/usr/bin/time -v -o "$OUT/dye.time" "$DYE" capture "${IARGS[@]}" -w "$OUT/dye.pcapng" \
    --duration "${CAP_SECS}s" "$FILTER" 2>"$OUT/dye.err" &
PIDS+=($!); DYE_PID=$!
/usr/bin/time -v -o "$OUT/tcpdump.time" ip netns exec "$(ns node-1)" \
    timeout -s INT "$CAP_SECS" tcpdump -i eth0 -w "$OUT/tcpdump.pcap" "$FILTER" 2>"$OUT/tcpdump.err" &
PIDS+=($!); TCPDUMP_PID=$!
sleep 1.5

for pair in "pod-b $POD_D" "pod-d $POD_B" "pod-a $POD_B"; do
    set -- $pair
    ip netns exec "$(ns "$1")" timeout $(( FLOOD_SECS + 2 )) \
        ping -q -f -s 1000 -c "$FLOOD_COUNT" -w "$FLOOD_SECS" "$2" >"$OUT/flood-$1.txt" 2>&1 &
    PIDS+=($!)
done
sleep 1
ip netns exec "$(ns pod-a)" ping -q -i 0.1 -c "$PROBES" -s 100 -p "$MARK" "$POD_C" >"$OUT/probe.txt" 2>&1 || true

wait "$DYE_PID" || true
wait "$TCPDUMP_PID" || true
sleep 0.5

flood_sent=0
for f in "$OUT"/flood-*.txt; do
    n=$(awk '/packets transmitted/ {print $1}' "$f"); flood_sent=$(( flood_sent + ${n:-0} ))
done
probe_sent=$(awk '/packets transmitted/ {print $1}' "$OUT/probe.txt")
probe_recv=$(awk '/packets transmitted/ {print $4}' "$OUT/probe.txt")
echo "flood: $flood_sent echo requests sent (+ replies) in ${FLOOD_SECS}s; probes: $probe_sent sent, $probe_recv answered"

echo
echo "dye capture summary:"
sed 's/^/  /' "$OUT/dye.err" | grep -v '^  dye: capturing' || true
expected=$(( probe_recv * 2 ))
missed=0
echo
printf '  %-34s %8s %8s\n' POINT PROBES MISSED
for p in "${POINTS[@]}"; do
    got=$(tshark -r "$OUT/dye.pcapng" -Y "frame.interface_name == \"$p\"" 2>/dev/null | wc -l)
    printf '  %-34s %8s %8s\n' "$p" "$got" $(( expected - got ))
    missed=$(( missed + expected - got ))
done
echo "  probe frames missed by dye over all points: $missed (expected $expected per point)"
tcpdump_got=$(capinfos -M -c "$OUT/tcpdump.pcap" 2>/dev/null | awk -F: '/Number of packets/ {gsub(/ /,"",$2); print $2}')
echo "  tcpdump on $(ns node-1)/eth0: $tcpdump_got probe frames (expected $expected); $(grep 'dropped by kernel' "$OUT/tcpdump.err" || true)"

metric() { awk -F': ' -v k="$2" '$1 ~ k {print $2}' "$1"; }
echo
printf '  %-28s %10s %10s %12s %12s\n' "" "user s" "system s" "CPU %" "max RSS KiB"
for t in dye tcpdump; do
    printf '  %-28s %10s %10s %12s %12s\n' "$t" \
        "$(metric "$OUT/$t.time" 'User time')" "$(metric "$OUT/$t.time" 'System time')" \
        "$(metric "$OUT/$t.time" 'Percent of CPU')" "$(metric "$OUT/$t.time" 'Maximum resident')"
done
echo "  (dye: ${#POINTS[@]} points, 2 kernel-filtered handles each; tcpdump: 1 interface; tcpdump's figure includes the ip netns exec/timeout wrappers' exec only)"
echo "raw files: $OUT"
