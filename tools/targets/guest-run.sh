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

# stuck_console: the kernel's own account of every blocked task (sysrq-w, with kernel stacks)
# and of each CPU (sysrq-l), on the console that the host keeps in KIND.console.log. Bash
# builtins and /proc only: it works when what hangs is the root file system (9p).
stuck_console() {
  echo 8 >/proc/sys/kernel/printk  # every level to the console (the guest ends after this)
  echo w >/proc/sysrq-trigger
  echo l >/proc/sysrq-trigger
}

# stuck_report: what every task is doing, for a tier that hangs. ps with wait channels, the
# kernel stacks of tasks in uninterruptible sleep, and the kernel log.
stuck_report() {
  echo "== $(date -u +%FT%TZ): the $kind guest's tests ran past ${watchdog}s"
  ps -eo pid,ppid,stat,wchan:32,etime,args
  for d in /proc/[0-9]*; do
    if [[ $(awk '{print $3}' "$d/stat" 2>/dev/null) == D ]]; then
      echo "== kernel stack of $(basename "$d") ($(tr '\0' ' ' <"$d/cmdline"))"
      cat "$d/stack" 2>/dev/null
    fi
  done
  echo "== kernel log"
  dmesg
}

# A guest whose tests hang dumps its tasks to the console (stuck_console), writes KIND.stuck
# (stuck_report) and ends pytest after the watchdog, instead of holding the host's timeout
# with nothing to show; pytest dumps its own threads' Python stacks into KIND.log when one
# test runs past faulthandler_timeout.
watchdog=${SCOUTFS_COLLECT_TARGET_WATCHDOG:-1500}
# (a background job of a script starts with SIGINT ignored: env gives pytest its default back)
env --default-signal=INT "$python" -m pytest -p no:cacheprovider -q -rA --basetemp="/tmp/targets-$kind" \
  -o faulthandler_timeout=600 --junitxml="$results/$kind-junit.xml" tests/targets &
pytest_pid=$!
(
  deadline=""
  trap 'kill $deadline 2>/dev/null; exit 0' TERM  # pytest ended: no report
  sleep "$watchdog" &
  deadline=$!
  wait "$deadline"
  stuck_console
  stuck_report >"$results/$kind.stuck" 2>&1
  kill -INT "$pytest_pid"  # pytest prints where each test was and writes its junit file
  sleep 30 & deadline=$!
  wait "$deadline"
  kill -KILL "$pytest_pid" 2>/dev/null
) &
watcher_pid=$!
wait "$pytest_pid"
echo $? >"$results/$kind.rc"
kill "$watcher_pid" 2>/dev/null
wait "$watcher_pid" 2>/dev/null
true
