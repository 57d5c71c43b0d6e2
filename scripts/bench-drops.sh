#!/usr/bin/env bash
# Overhead of dye's drop tracing: TCP throughput pod-a → pod-c (across node-1, the VXLAN
# overlay and node-2) in a throwaway lab, with nothing armed and then while a `dye trace`
# holds nftables tracing (every namespace) and the kfree_skb eBPF program armed. Also the
# time arming adds to a trace (dye's own debug timings). Needs root and a built dye
# (cargo build -p dye-tracer -p dye-capture --examples); iperf3 from scripts/setup.sh. Everything runs inside the lab.
set -euo pipefail

DYE=${DYE:-target/debug/dye}
ID=${ID:-bench$$}
SECS=${SECS:-5}
ns() { echo "dye-$ID-$1"; }

"$DYE" lab up --id "$ID" >/dev/null
trap '"$DYE" lab down "$ID" >/dev/null 2>&1 || true' EXIT
C=$("$DYE" lab status "$ID" --json | python3 -c '
import json, sys
m = next(m for m in json.load(sys.stdin)["members"] if m["name"] == "pod-c")
print(next(i for i in m["interfaces"] if i["name"] == "eth0")["addresses"][0].split("/")[0])')

ARM=${ARM:-target/debug/examples/arm_drops}
NSES=$(ip netns list | awk -v p="dye-$ID-" 'index($1, p) == 1 {print $1}')
measure() { # PORT [ARM ARGS…]: throughput while the arming program (if any) holds
  local port=$1; shift
  ip netns exec "$(ns pod-c)" iperf3 -s -1 -D -p "$port" >/dev/null
  local holder=""
  if (($#)); then
    "$ARM" "$@" >/tmp/bench-drops-arm-$ID.log & holder=$!
    # Measure once armed (loading parses the kernel's BTF: CPU-bound for a moment).
    for _ in $(seq 300); do grep -q '^armed' /tmp/bench-drops-arm-$ID.log && break; sleep 0.1; done
    sleep 0.5
  fi
  rate "$port"
  if [[ -n $holder ]]; then kill "$holder"; wait "$holder" 2>/dev/null || true; fi
}
rate() { ip netns exec "$(ns pod-a)" iperf3 -c "$C" -p "$1" -t "$SECS" -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))'; }

echo "TCP pod-a -> pod-c through node-1, VXLAN, node-2; ${SECS}s each (iperf3), Gbit/s:"
echo "  nothing armed:                                $(measure 5201)"
echo "  kfree_skb program armed:                      $(measure 5202 $((SECS + 30)))"
echo "  program + nftrace tables in $(echo "$NSES" | wc -w) namespaces:  $(measure 5203 $((SECS + 30)) $NSES)"
echo "  nothing armed (again):                        $(measure 5204)"
echo "  program + nftrace (again):                    $(measure 5205 $((SECS + 30)) $NSES)"
echo "  $(cat /tmp/bench-drops-arm-$ID.log)"
rm -f /tmp/bench-drops-arm-$ID.log

# The time arming adds to a trace, as dye logs it (-vv).
"$DYE" -vv trace --from "$(ns pod-a)" --to "$C" --timeout 1s >/dev/null 2>/tmp/bench-drops-$ID.log || true
echo "dye trace pod-a -> pod-c (dye's own timings):"
grep -oE '(netfilter tracing armed|kernel drop watch|netfilter tracing disarmed).*' /tmp/bench-drops-$ID.log \
  | sed 's/\x1b\[[0-9;]*m//g; s/^/  /' || true
rm -f /tmp/bench-drops-$ID.log
