#!/usr/bin/env bash
# Build a guest kernel (bzImage) of one RHEL tag for scoutfs-collect's target tier, as root:
#   bash tools/targets/build-kernel.sh SOURCE_GIT_DIR TAG
# SOURCE_GIT_DIR: a git dir holding RHEL kernel tags (e.g. a bare clone of
# github.com/bobolopolis/linux-el); TAG: e.g. 4.18.0-513.9.1.el8_9, 4.18.0-240.el8,
# 5.14.0-362.8.1.el9_3. Writes CACHE/TAG/{src/,bzImage,build.log,fixups.txt,make-runs.txt,
# kernel-info}, where CACHE is $SCOUTFS_COLLECT_TARGETS_CACHE or
# /var/cache/scoutfs-collect-targets; does nothing when
# CACHE/TAG/bzImage exists. src/ stays: build-scoutfs.sh builds the module against it.
# Installs the build packages (apt-get) and virtme-ng (pip, into CACHE/vng) itself.
# JOBS (default 2) sets make -j; everything runs under nice -n 19.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 2 ]] || die "usage: build-kernel.sh SOURCE_GIT_DIR TAG"
git_dir=$1 tag=$2
[[ $(id -u) -eq 0 ]] || die "run as root (installs packages, writes $TARGETS_CACHE)"
need_debs git build-essential bc flex bison libelf-dev libssl-dev cpio rsync kmod python3
git --git-dir="$git_dir" rev-parse -q --verify "refs/tags/$tag^{commit}" >/dev/null ||
  die "$git_dir: no tag $tag"
out=$TARGETS_CACHE/$tag
if [[ -s $out/bzImage ]]; then
  echo "$tag: already built: $out/bzImage"
  exit 0
fi
ensure_vng
mkdir -p "$out"
src=$out/src log=$out/build.log

# 1. The tree. A mirror may lack a few large blobs (amdgpu register headers, not built
# here): leave those paths out rather than fail the whole archive.
if [[ ! -e $src/.extracted ]]; then
  rm -rf "$src" && mkdir -p "$src"
  listing=$out/tree-listing.txt
  git --git-dir="$git_dir" ls-tree -r --format='%(objectname) %(path)' "$tag" >"$listing"
  mapfile -t excludes < <(cut -d' ' -f1 "$listing" | git --git-dir="$git_dir" cat-file --batch-check |
    paste -d' ' - "$listing" | awk '$2 == "missing" { sub(/^[^ ]+ missing [^ ]+ /, ""); print ":(exclude)" $0 }')
  rm -f "$listing"
  [[ ${#excludes[@]} -eq 0 ]] || echo "$tag: ${#excludes[@]} files absent from the mirror, left out"
  # git archive still names an excluded missing blob ("error: invalid object ...") while it
  # fills its index, then leaves it out; any other missing object fails the archive.
  git --git-dir="$git_dir" archive --format=tar "$tag" -- . "${excludes[@]}" \
    2> >(grep -v "^error: invalid object " >&2) | tar -x -C "$src"
  touch "$src/.extracted"
fi

# 2. The gcc 12 / binutils 2.40 fixes (each names the upstream commit it mirrors).
python3 "$TARGETS_DIR/source-fixups.py" "$src" | tee "$out/fixups.txt"

# 3. Config: defconfig + virtme-ng's fragment + ours; no Calgary IOMMU (its driver does not
# build against this tree's dma_map_ops).
cd "$src"
fragment_sum=$(sha256sum "$TARGETS_DIR/guest.config" | cut -d' ' -f1)
if [[ ! -s .config || $(cat .guest-config.sha256 2>/dev/null) != "$fragment_sum" ]]; then
  "$TARGETS_CACHE/vng/bin/virtme-configkernel" --defconfig --custom "$TARGETS_DIR/guest.config" >"$log" 2>&1 ||
    die "$tag: virtme-configkernel failed, see $log"
  mapfile -t off < <(sed -n 's/^# CONFIG_\([A-Z0-9_]*\) is not set$/--disable\n\1/p' "$TARGETS_DIR/guest.config")
  scripts/config --disable CALGARY_IOMMU "${off[@]}"
  make olddefconfig >>"$log" 2>&1 || die "$tag: make olddefconfig failed, see $log"
  echo "$fragment_sum" >.guest-config.sha256
fi
for opt in CONFIG_9P_FS=y CONFIG_FUNCTION_TRACER=y CONFIG_KPROBE_EVENTS=y CONFIG_CRYPTO_CRC32C=y \
  CONFIG_BLK_DEV_LOOP=y CONFIG_MODULES=y CONFIG_HOTPLUG_CPU=y; do
  grep -qx "$opt" .config || die "$tag: .config lacks $opt after olddefconfig (see $src/.config)"
done

# 4. Build. RHEL's DISABLE_WERROR=1 turns off -Werror (gcc 12's array-bounds warnings);
# -k: one failed build shows every error, not only the first.
echo "$tag: building in $src (log: $log)"
# A failed build is fixed and run again: make-runs.txt keeps each make run (its start, its
# seconds, ok or failed), so kernel-info can give the whole build time, not the last run's.
echo "== build-kernel.sh: make started $(date -u +%FT%TZ)" >>"$log"
from_line=$(($(wc -l <"$log") + 1))
start=$(date +%s)
result=ok
nice -n 19 make -k -j"${JOBS:-2}" DISABLE_WERROR=1 >>"$log" 2>&1 || result=failed
echo "$(date -u -d "@$start" +%FT%TZ) seconds=$(($(date +%s) - start)) $result" >>"$out/make-runs.txt"
if [[ $result != ok ]]; then
  tail -n +"$from_line" "$log" | grep -E 'error:|Error [0-9]' | head -n 30 >&2
  die "$tag: kernel build failed, see $log"
fi
cp arch/x86/boot/bzImage "$out/bzImage.part" && mv "$out/bzImage.part" "$out/bzImage"
total=$(awk '{ sub(/seconds=/, "", $2); s += $2 } END { print s }' "$out/make-runs.txt")
runs=$(wc -l <"$out/make-runs.txt")
{
  echo "tag=$tag"
  echo "release=$(make -s kernelrelease)"
  echo "built=$(date -u +%FT%TZ) seconds=$(($(date +%s) - start)) total_seconds=$total make_runs=$runs"
  echo "gcc=$(gcc -dumpfullversion)"
} >"$out/kernel-info"
echo "$tag: built $out/bzImage in $(($(date +%s) - start)) s ($total s over $runs make runs)"
