#!/usr/bin/env bash
# Runs INSIDE a guest booted by tools/test-targets.sh (never on a host): checks the guest has
# no network but loopback, then runs the target tier for one guest kind.
#   guest-run.sh RESULTS_DIR main|hotplug [SCOUTFS_DIR]
# Writes RESULTS_DIR/KIND.log (pytest's output), KIND-junit.xml and KIND.rc (pytest's exit
# status, or 3 when the guest is not what the tier needs).
set -uo pipefail
results=$1 kind=$2 scoutfs=${3:-}
repo=$(cd "$(dirname "$0")/../.." && pwd)
log=$results/$kind.log
exec >"$log" 2>&1
echo "guest: $(uname -r), $(nproc) CPUs online of $(cat /sys/devices/system/cpu/possible) possible"
echo "printk at boot: $(cat /proc/sys/kernel/printk)"
echo "scoutfs build: ${scoutfs:-none}$([[ -z $scoutfs || -f $scoutfs/scoutfs.ko ]] || echo ' (not visible in the guest)')"
# No guest network but loopback: a network device (one backed by a device: virtio-net, a
# NIC) or an address outside 127.0.0.0/8 and ::1 and the tier does not run. The kernel's own
# virtual devices (dummy0, sit0: down, no address) are no network.
nics=$(for d in /sys/class/net/*; do [[ -e $d/device ]] && basename "$d"; done)
addrs=$(ip -o addr show | awk '{print $4}' | grep -vE '^(127\.|::1/)' || true)
if [[ -n $nics || -n $addrs ]]; then
  echo "the guest has network beyond loopback: devices [$nics] addresses [$addrs]"
  echo 3 >"$results/$kind.rc"
  exit 3
fi
ip link set lo up
export SCOUTFS_COLLECT_TARGET_GUEST=$kind SCOUTFS_COLLECT_TARGET_RESULTS=$results
export SCOUTFS_COLLECT_TARGET_SCOUTFS=$scoutfs
# Bytecode written in the guest's own /tmp (RAM), never into the host's checkout: without it
# every Python the tier starts compiled our modules again (seconds each under emulation, on
# the fence hook's clock too).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/sfc-pycache
python=${SCOUTFS_COLLECT_TARGET_PYTHON:-$repo/.venv-3.9/bin/python}
cd "$repo" || exit 3
"$python" -m pytest -p no:cacheprovider -q -rA --basetemp="/tmp/targets-$kind" \
  --junitxml="$results/$kind-junit.xml" tests/targets
echo $? >"$results/$kind.rc"
