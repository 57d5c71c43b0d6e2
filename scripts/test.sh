#!/usr/bin/env bash
# The whole test suite, as a newcomer runs it (as root, from the repository):
#   bash scripts/test.sh
# Installs what is missing, checks formatting and lints, then runs every test: unit tests,
# checks against tshark/tcpdump, property tests, and end-to-end tests on real labs (network
# namespaces, veths, bridges, VXLAN, iptables). Finally proves no test lab was left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "test: run as root (the end-to-end tests create network namespaces): sudo bash scripts/test.sh" >&2
  exit 2
fi

bash scripts/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"

echo "== leftovers"
# Test labs are named dye-t<hex>x<n>-…; none may survive the suite.
left=$(ip netns list | awk '{print $1}' | grep -E '^dye-t[0-9a-f]+x[0-9]+-' || true)
if [[ -n "$left" ]]; then
  echo "test: namespaces left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "no test namespaces left"
# Their container runtimes neither: containerd and shims name the lab's state directory, the
# pod sandboxes' cgroups are dye-<id>-<node> in every hierarchy.
procs=$(pgrep -af '/run/dye/lab-t[0-9a-f]+x[0-9]+/' || true)
cgroups=$(find /sys/fs/cgroup -maxdepth 2 -type d -regex '.*/dye-t[0-9a-f]+x[0-9]+-.*' 2>/dev/null || true)
if [[ -n "$procs$cgroups" ]]; then
  echo "test: container runtime remains left behind by the tests:" >&2
  echo "$procs$cgroups" >&2
  exit 1
fi
echo "no test runtimes, shims or cgroups left"
# Temporary captures are /tmp/dye-test-*; none may survive either.
files=$(compgen -G '/tmp/dye-test-*' || true)
if [[ -n "$files" ]]; then
  echo "test: temporary files left behind by the tests:" >&2
  echo "$files" >&2
  exit 1
fi
echo "no test files left"

# One closing line over every test binary (cargo prints one "test result" per binary; the
# last of them is often a doctest run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i; if ($(i+1) ~ /^ignored;?$/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
