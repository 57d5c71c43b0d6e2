#!/usr/bin/env bash
# dye's main job on the built-in lab, as a newcomer runs it (as root, from the repository):
#   bash scripts/demo.sh
# Installs what is missing, builds dye, brings up the emulated two-node cluster, shows traffic
# crossing it, and tears the lab down again (also on failure or Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: run as root (the lab creates network namespaces): sudo bash scripts/demo.sh" >&2
  exit 2
fi

bash scripts/setup.sh
echo "== building dye"
cargo build --release --quiet -p dye-tracer
dye=target/release/dye
id="demo$$"
ns() { echo "dye-$id-$1"; }
trap '"$dye" lab down "$id" >/dev/null' EXIT INT TERM

echo "== bringing up lab $id"
"$dye" lab up --id "$id"

step() { printf '\n== %s\n$ %s\n' "$1" "$2"; }

step "pod-a (node-1) → pod-c (node-2), across the VXLAN overlay" \
  "ip netns exec $(ns pod-a) ping -c2 10.244.2.2"
ip netns exec "$(ns pod-a)" ping -c2 -W1 10.244.2.2

step "pod-b → ClusterIP 10.96.0.10:80 (kube-proxy DNAT to pod-a or pod-c), 6 tries" \
  "ip netns exec $(ns pod-b) ncat 10.96.0.10 80 </dev/null"
for _ in 1 2 3 4 5 6; do ip netns exec "$(ns pod-b)" ncat -w2 10.96.0.10 80 </dev/null; done | sort | uniq -c

step "office 10.244.2.50 → VIP 203.0.113.80:80 (firewall SNAT+DNAT, NodePort, masquerade)" \
  "ip netns exec $(ns office) ncat 203.0.113.80 80 </dev/null"
ip netns exec "$(ns office)" ncat -w2 203.0.113.80 80 </dev/null
ip netns exec "$(ns fw)" conntrack -L -p tcp 2>/dev/null | head -1

echo
echo "== tearing down lab $id"
"$dye" lab down "$id"
trap - EXIT INT TERM
