#!/usr/bin/env bash
# Whole-command benchmark: `dye decode` vs `tcpdump -nn -r` vs `tshark -r`, each reading the same
# overlay-heavy capture (VXLAN TCP data/ACKs, VXLAN ICMP probes and errors, Geneve, plain TCP,
# VLAN) and writing to /dev/null. One run each; prints wall times and ratios.
#
#   scripts/bench-decode.sh [PACKETS]      # default 1000000
#
# The capture is generated into a temporary directory (never committed) by the decode crate's
# `samples` example and removed afterwards. Needs tcpdump, tshark and capinfos.
set -euo pipefail

N="${1:-1000000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

for tool in tcpdump tshark capinfos; do
    command -v "$tool" >/dev/null || { echo "bench-decode: $tool not found (apt-get install tcpdump tshark)" >&2; exit 2; }
done

cargo build --release -q -p dye-tracer --bin dye
cargo build --release -q -p dye-decode --example samples

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
PCAP="$TMP/bench.pcap"
"$TARGET/release/examples/samples" --bench "$N" "$PCAP"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "capture: $(capinfos -c -M "$PCAP" | awk -F': *' '/Number of packets/ {print $2}') packets, $(du -m "$PCAP" | cut -f1) MiB (generated, overlay-heavy)"

# Wall time in seconds of one run of "$@" with stdout and stderr to /dev/null.
wall() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

# Warm the page cache so the first tool does not pay for disk reads.
cat "$PCAP" >/dev/null

DYE=$(wall "$TARGET/release/dye" decode "$PCAP")
TCPDUMP=$(wall tcpdump -nn -r "$PCAP")
TSHARK=$(wall tshark -n -r "$PCAP" -d udp.port==8472,vxlan)

printf '%-40s %8.2f s\n' "dye decode FILE" "$DYE"
printf '%-40s %8.2f s\n' "tcpdump -nn -r FILE" "$TCPDUMP"
printf '%-40s %8.2f s\n' "tshark -n -r FILE -d udp.port==8472,vxlan" "$TSHARK"
printf 'dye decode is %.1fx faster than tcpdump -nn -r and %.1fx faster than tshark -r\n' \
    "$(awk -v a="$TCPDUMP" -v b="$DYE" 'BEGIN { print a / b }')" \
    "$(awk -v a="$TSHARK" -v b="$DYE" 'BEGIN { print a / b }')"
