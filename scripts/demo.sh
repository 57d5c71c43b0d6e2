#!/usr/bin/env bash
# dye's main job on the built-in lab, as a newcomer runs it (as root, from the repository):
#   bash scripts/demo.sh
# Installs what is missing, builds dye, brings up the emulated two-node cluster, shows traffic
# crossing it, then the same across isolated nodes through agents, and tears the labs down
# again (also on failure or Ctrl-C).
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
# Pods by name: each lab node runs its own containerd; dye asks both (CRI) for pod references.
runtimes=(--runtime-endpoint "/run/dye/lab-$id/containerd/node-1/containerd.sock"
          --runtime-endpoint "/run/dye/lab-$id/containerd/node-2/containerd.sock")
trap '"$dye" lab down "$id" >/dev/null' EXIT INT TERM

echo "== bringing up lab $id"
"$dye" lab up --id "$id" | tail -4

step() { printf '\n== %s\n$ %s\n' "$1" "$2"; }

step "pod-a on node-1 → pod-c on node-2, by pod name: every hop across the VXLAN overlay and back" \
  "dye trace --runtime-endpoint …/node-1/containerd.sock --runtime-endpoint …/node-2/containerd.sock --from pod:default/pod-a --to pod:default/pod-c"
"$dye" trace "${runtimes[@]}" --from pod:default/pod-a --to pod:default/pod-c

step "office → VIP 203.0.113.80:80: firewall SNAT+DNAT, NodePort DNAT + masquerade, each confirmed by conntrack" \
  "dye trace --from $(ns office) --to 203.0.113.80:80"
"$dye" trace --from "$(ns office)" --to 203.0.113.80:80

step "a DROP rule for pod-c in node-2's FORWARD chain: where does the probe die?" \
  "dye lab fault $id drop-pod pod-c; dye trace … --from pod:default/pod-a --to pod:default/pod-c --record drop.dye"
"$dye" lab fault "$id" drop-pod pod-c
recording=$(mktemp /tmp/dye-demo-XXXXXX.dye)
trap '"$dye" lab down "$id" >/dev/null; rm -f "$recording"' EXIT INT TERM
"$dye" trace "${runtimes[@]}" --from pod:default/pod-a --to pod:default/pod-c --timeout 1s --record "$recording" \
  || echo "(exit status $?: not delivered)"

step "underlay links shrunk to 1400 with outer DF set: big packets vanish — which link, what MTU?" \
  "dye lab fault $id clear; dye lab fault $id underlay-mtu 1400; dye lab fault $id vxlan-df; dye mtu … --from pod:default/pod-a --to pod:default/pod-c"
"$dye" lab fault "$id" clear >/dev/null
"$dye" lab fault "$id" underlay-mtu 1400
"$dye" lab fault "$id" vxlan-df
"$dye" mtu "${runtimes[@]}" --from pod:default/pod-a --to pod:default/pod-c || echo "(exit status $?: a black hole)"

echo
echo "== tearing down lab $id"
"$dye" lab down "$id"
step "the dropped trace, replayed from its recording after the lab is gone, without privileges" \
  "capsh --drop=cap_net_admin,cap_net_raw,cap_sys_admin -- -c 'dye replay drop.dye' | tail -3"
capsh --drop=cap_net_admin,cap_net_raw,cap_sys_admin -- -c "$dye replay $recording" | tail -3 || true
rm -f "$recording"
trap - EXIT INT TERM

# Across machines: every node a host of its own, an agent container on each, one merged trace.
iso="${id}i"
trap '"$dye" lab down "$iso" >/dev/null' EXIT INT TERM
printf '\n== bringing up lab %s with isolated nodes (own mount, PID and UTS namespaces; an agent container each)\n' "$iso"
"$dye" lab up --id "$iso" --isolated | tail -6
agents=192.168.50.11:7443,192.168.50.12:7443
step "node-2's clock off by 37 ms; the coordinator on node-1 merges both nodes' hops onto one timeline" \
  "dye lab fault $iso agent-clock node-2 37ms; dye lab exec --id $iso node-1 -- dye trace --agents $agents --certs /run/dye/lab-$iso/certs --from pod:pod-a --to pod:pod-c"
"$dye" lab fault "$iso" agent-clock node-2 37ms
"$dye" lab exec --id "$iso" node-1 -- "$PWD/$dye" trace --agents "$agents" \
  --certs "/run/dye/lab-$iso/certs" --from pod:pod-a --to pod:pod-c
echo
echo "== tearing down lab $iso"
"$dye" lab down "$iso"
trap - EXIT INT TERM
