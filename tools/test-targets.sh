#!/usr/bin/env bash
# The target tier: boot every guest kernel in the cache (built by tools/targets/build-kernel.sh,
# scoutfs by tools/targets/build-scoutfs.sh) under virtme-ng and run tests/targets inside, as
# root:
#   bash tools/test-targets.sh [--if-cached] [TAG...]   (default: every CACHE/TAG/bzImage)
# --if-cached (CI): the kernels of tools/targets/ci-kernels (those the tier is proven on)
# that are built in the cache; with none, say so in one line and exit 0. A kernel built in
# the cache but not listed is named in one line and not run.
# Two guests per kernel, both with no network but loopback, the host's root read-only over 9p
# and CACHE/TAG/results/STAMP/ writable: "main" (--cpus 2: demo, freeze self-test, stop
# --wait durable, scoutfs when built) and "hotplug" (-smp 2,maxcpus=8). Prints one line per
# kernel, PASS or FAIL and where its logs are; exit 0 when every kernel passed.
# Uses software emulation (--disable-kvm) unless the CPU has VMX/SVM and /dev/kvm is usable
# (on PVM hosts stock kernels fail under KVM); SCOUTFS_COLLECT_TARGETS_KVM=0|1 forces it.
# SCOUTFS_COLLECT_TARGETS_TIMEOUT (s, default 1800 main, 900 hotplug) bounds each guest;
# SCOUTFS_COLLECT_TARGETS_GUESTS="main" runs one guest kind only (the other shows as not run).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source tools/targets/lib.sh
[[ $(id -u) -eq 0 ]] || die "run as root (the guests run the tier as root)"

if_cached=0
if [[ ${1:-} == --if-cached ]]; then
  if_cached=1
  shift
fi
if [[ $# -gt 0 ]]; then
  kernels=("${@/#/$TARGETS_CACHE/}")
elif [[ $if_cached == 1 ]]; then
  kernels=()
  while read -r tag _; do
    [[ -z $tag || $tag == \#* ]] && continue
    if [[ -s $TARGETS_CACHE/$tag/bzImage ]]; then kernels+=("$TARGETS_CACHE/$tag"); fi
  done < tools/targets/ci-kernels
  for built in "$TARGETS_CACHE"/*/bzImage; do
    [[ -e $built ]] || continue
    tag=$(basename "$(dirname "$built")")
    grep -qx "$tag" <(sed 's/[[:space:]].*//' tools/targets/ci-kernels) ||
      echo "target tier: $tag is built in the cache but not in tools/targets/ci-kernels: not run"
  done
else
  mapfile -t kernels < <(find "$TARGETS_CACHE" -mindepth 2 -maxdepth 2 -name bzImage -printf '%h\n' 2>/dev/null | sort)
fi
if [[ ${#kernels[@]} -eq 0 ]]; then
  echo "target tier not run: no kernel in $TARGETS_CACHE (build one with tools/targets/build-kernel.sh SOURCE_GIT_DIR TAG)"
  exit $((1 - if_cached))
fi
need_debs qemu-system-x86 trace-cmd tcpdump zstd iproute2 kmod
ensure_vng
bash tools/setup.sh --test 3.9 >/dev/null  # the guests run the host's .venv-3.9

kvm=${SCOUTFS_COLLECT_TARGETS_KVM:-}
if [[ -z $kvm ]]; then
  kvm=0
  grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]] && kvm=1
fi
accel=()
[[ $kvm == 1 ]] || accel=(--disable-kvm)
# The host's root as virtme-ng mounts it, plus cache=loose: the guest caches what it read of
# the (read-only) root instead of asking the host over 9p again for every lookup. Every
# Python start went from 7-8 s to 2 s under emulation (4.18.0-513.9.1.el8_9), which the real
# fence test needs: its chain (scoutfs-fenced, the hook, the victim's `stop` over ssh, the
# agent) has 30 s. The results dir (--rwdir) is a mount of its own, not cached.
rootflags=(--append "rootflags=version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose")
# The guest's console goes to KIND.console.log (--verbose: without it virtme-ng sends it to
# /dev/null) at the console level the guests are tested at (loglevel=1, as virtme-ng boots
# them quiet: printk "1 4 1 7"): a hung guest's task dump (guest-run.sh) lands there.
console=(--verbose --append loglevel=1)
# RHEL's kernels are built with CONFIG_RANDOM_TRUST_CPU=y (the guests' defconfig is not): the
# CRNG is seeded from RDRAND at boot, as on the targets, instead of from interrupt timing,
# which is slow under emulation (every uuid4() and os.urandom() blocks until it is done).
entropy=(--append random.trust_cpu=on)

status=0
for kdir in "${kernels[@]}"; do
  tag=$(basename "$kdir")
  if [[ ! -s $kdir/bzImage ]]; then
    echo "$tag: FAIL (no $kdir/bzImage: build it with tools/targets/build-kernel.sh)"
    status=1
    continue
  fi
  res=$kdir/results/$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$res"
  scoutfs_dir="" scoutfs_state="not built"
  if [[ -s $kdir/scoutfs/scoutfs.ko ]]; then
    scoutfs_dir=$kdir/scoutfs scoutfs_state="built $(sed -n 's/^scoutfs=//p' "$kdir/scoutfs/scoutfs-info")"
  fi
  # The guest does not see the cache through the host's root (virtme-ng mounts a tmpfs on
  # /var/cache): the scoutfs build goes in read-only by itself.
  share=()
  [[ -z $scoutfs_dir ]] || share=(--rodir="$scoutfs_dir")
  for kind in ${SCOUTFS_COLLECT_TARGETS_GUESTS:-main hotplug}; do
    # watchdog: the guest's own bound on its tests (guest-run.sh writes KIND.stuck and ends
    # pytest past it; the main guest takes 6-9 min, hotplug 1-2 min under emulation); the
    # host's timeout is the bound on the whole guest, boot and power-off included.
    smp=() watchdog=1500
    [[ $kind == hotplug ]] && smp=(--qemu-opts="-smp 2,maxcpus=8") watchdog=600
    timeout --kill-after=30 "${SCOUTFS_COLLECT_TARGETS_TIMEOUT:-$((watchdog + 300))}" \
      "$VNG" --run "$kdir/bzImage" "${accel[@]}" --force-9p "${rootflags[@]}" "${console[@]}" "${entropy[@]}" --user root --memory 2G --cpus 2 \
      "${smp[@]}" "${share[@]}" --rwdir="$res" --cwd "$repo" \
      --exec "SCOUTFS_COLLECT_TARGET_WATCHDOG=$watchdog bash $repo/tools/targets/guest-run.sh $res $kind $scoutfs_dir" \
      </dev/null >"$res/$kind.console.log" 2>&1 || true
  done
  python3 tools/targets/summarize.py "$res" "$tag" "$scoutfs_state" || status=1
done
exit "$status"
