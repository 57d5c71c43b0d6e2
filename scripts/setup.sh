#!/usr/bin/env bash
# Idempotent: installs the system packages dye, its lab and its tests need.
# Debian packages only (apt-get update first); nothing is downloaded from anywhere else.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config libpcap-dev   # building dye (pcap crate links libpcap)
  protobuf-compiler                        # building dye (CRI protos; dye.agent.v1 in proto/)
  clang libbpf-dev                         # building dye (capture/build.rs: the kfree_skb eBPF program)
  bpftool                                  # tests: dye's BPF programs and links are gone after it
  iperf3                                   # scripts/bench-drops.sh, bench-tunnels.sh: bounded load through a node
  iproute2 iptables nftables conntrack     # the lab's kernel plumbing and its inspection
  containernetworking-plugins              # CNI bridge + host-local, run by containerd's CRI
  containerd runc busybox-static           # the lab nodes' container runtime, pause image sleeper
  tshark tcpdump                           # outside checks of dye's captures and decodes
  iputils-ping iputils-tracepath ncat      # plain-tool checks of the lab, MTU baselines
  scamper                                  # MTU baseline (scripts/bench-mtu.sh: trace -M)
  procps psmisc time libcap2-bin           # pgrep/pkill; /usr/bin/time -v; capsh (tests, demo)
  jq                                       # scripts/bench-scale.sh reads dye's JSON reports
  openssl                                  # outside TLS client checking the agents' mutual TLS
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  # iperf3 asks whether to run a server at boot: no (the benchmark starts a one-off one).
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "setup: system packages present"
