#!/usr/bin/env bash
# Records the replay fixtures in samples/recordings/ from real runs on the built-in lab:
#   sudo bash scripts/record-fixtures.sh [target/debug/dye]
# Each case brings the lab into a state (faults, a rule), runs `dye trace|mtu --record`, and
# restores it. The non-root tests in tracer/core/tests/ replay these files and assert hops,
# events, verdicts and MTU results. Re-record after a change that alters what dye captures.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "record-fixtures: run as root (the lab creates network namespaces)" >&2
  exit 2
fi
dye=${1:-target/debug/dye}
[[ -x $dye ]] || cargo build -q -p dye-tracer
out=samples/recordings
mkdir -p "$out"
id=fx
lab() { "$dye" lab "$@" >/dev/null; }
ns() { echo "dye-$id-$1"; }

lab down "$id" 2>/dev/null || true
trap '"$dye" lab down "$id" >/dev/null 2>&1 || true' EXIT
lab up --id "$id"

trace() { # NAME ARGS...: one recorded trace (its verdict may be negative)
  local name=$1; shift
  "$dye" trace --record "$out/$name.dye" "$@" >/dev/null || true
  echo "recorded $name"
}
mtu() {
  local name=$1; shift
  "$dye" mtu --record "$out/$name.dye" "$@" >/dev/null || true
  echo "recorded $name"
}

a=$(ns pod-a) b=$(ns pod-b) office=$(ns office)

trace trace-icmp-cross-node --from "$a" --to 10.244.2.2
trace trace-icmp-same-node --from "$a" --to 10.244.1.3
trace trace-tcp-clusterip --from "$b" --to 10.96.0.10:80
trace trace-udp-clusterip --from "$b" --to 10.96.0.10:53 --proto udp
trace trace-tcp-clusterip-count --from "$b" --to 10.96.0.10:80 --count 6 --interval 20ms
trace trace-office-vip --from "$office" --to 203.0.113.80:80
trace trace-udp-closed-port --from "$a" --to 10.244.2.2:33434 --proto udp
trace trace-v6-cross-node --from "$a" --to fd00:244:2::2
trace trace-v6-tcp --from "$a" --to '[fd00:244:2::2]:8080'
trace trace-timeout --from "$a" --to 10.244.1.3 -i "$(ns node-2)/eth0" --timeout 500ms

ip netns exec "$(ns pod-c)" iptables -A INPUT -p udp --dport 9999 -j DROP
trace trace-delivered --from "$a" --to 10.244.2.2:9999 --proto udp --timeout 1s
ip netns exec "$(ns pod-c)" iptables -D INPUT -p udp --dport 9999 -j DROP

lab fault "$id" drop-pod pod-c
trace trace-drop-pod --from "$a" --to 10.244.2.2 --timeout 1s
mtu mtu-unreachable --from "$a" --to 10.244.2.2
lab fault "$id" clear

lab fault "$id" no-route node-1 node-2
trace trace-no-route --from "$a" --to 10.244.2.2 --timeout 1s
lab fault "$id" clear

lab fault "$id" underlay-mtu 1400
trace trace-outer-fragments --from "$a" --to 10.244.2.2 --size 1400
mtu mtu-outer-fragmenting --from "$a" --to 10.244.2.2
lab fault "$id" vxlan-df
trace trace-black-hole --from "$a" --to 10.244.2.2 --size 1400 --timeout 1s
mtu mtu-black-hole --from "$a" --to 10.244.2.2
lab fault "$id" clear

lab fault "$id" link-mtu pod-a/eth0 1500
trace trace-inner-fragments --from "$a" --to 10.244.2.2 --size 1480
trace trace-df-too-big --from "$a" --to 10.244.2.2 --size 1480 --df
mtu mtu-signalled-by-node --from "$a" --to 10.244.2.2
lab fault "$id" clear

lab fault "$id" link-mtu fw/eth1 1280
# The search first: a trace's big IPv6 probe leaves the Packet Too Big's PMTU in pod-a's cache.
mtu mtu-v6-packet-too-big --from "$a" --to fd00:10::50
trace trace-v6-packet-too-big --from "$a" --to fd00:10::50 --size 1400
lab fault "$id" clear

lab fault "$id" link-mtu fw/eth0 1280
mtu mtu-through-nat --from "$office" --to 203.0.113.80:80
lab fault "$id" clear

mtu mtu-healthy --from "$a" --to 10.244.2.2

# The routed shape (samples/lab/routed.toml), same id: a VXLAN black hole behind the router,
# recorded cold (the node has not cached the router's MTU yet), and a trace across it.
lab down "$id"
lab up --id "$id" --topology samples/lab/routed.toml
trace trace-routed-cross-node --from "$a" --to 10.244.2.2
lab fault "$id" link-mtu router/node-2 1400
mtu mtu-routed-outer-fragmenting --from "$a" --to 10.244.2.2
ip -n "$(ns node-1)" route flush cache
lab fault "$id" vxlan-df
mtu mtu-routed-black-hole --from "$a" --to 10.244.2.2
# A cold first answer: pod-a's gateway ARP answered by proxy after a random delay below 1 s.
cali=$(ip -n "$(ns node-1)" -4 route | awk '/^10\.244\.1\.2 dev cali/ {print $3}')
ip netns exec "$(ns node-1)" sysctl -q -w "net.ipv4.neigh.$cali.proxy_delay=100"
ip -n "$a" neigh flush dev eth0
ip -n "$(ns node-1)" route flush cache
mtu mtu-routed-cold-first-answer --from "$a" --to 10.244.2.2

# flannel's udp backend (samples/lab/flannel-udp.toml), same id: an underlay of 1400 under
# flannel0's 1472 splits the forwarder's IP-in-UDP datagrams on node-1's eth0.
lab down "$id"
lab up --id "$id" --topology samples/lab/flannel-udp.toml
lab fault "$id" underlay-mtu 1400
mtu mtu-udp-outer-fragmenting --from "$a" --to 10.244.2.2
echo "fixtures in $out: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1)"
