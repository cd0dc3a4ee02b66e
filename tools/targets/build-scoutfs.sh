#!/usr/bin/env bash
# Build scoutfs (the kernel module and the `scoutfs` utility) against one guest kernel built
# by build-kernel.sh, as root:
#   bash tools/targets/build-scoutfs.sh KERNEL_CACHE_DIR
# KERNEL_CACHE_DIR: CACHE/TAG from build-kernel.sh (it holds src/, the built tree).
# Sources: the git dir $SCOUTFS_GIT_DIR (default CACHE/scoutfs.git, cloned bare from
# https://github.com/versity/scoutfs on first use), at $SCOUTFS_REF (default HEAD).
# Writes KERNEL_CACHE_DIR/scoutfs/{scoutfs.ko,scoutfs,build.log,scoutfs-info}; does nothing
# when both are there. On kernels older than scoutfs HEAD supports (EL 8.3), a failed build is
# retried once with scoutfs's removed older-kernel paths restored (1af10406, 94d06e65
# reverted); scoutfs-info says whether that was needed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 1 ]] || die "usage: build-scoutfs.sh KERNEL_CACHE_DIR"
kdir=$(cd "$1" 2>/dev/null && pwd) || die "$1: no such directory"
ksrc=$kdir/src
[[ -s $kdir/bzImage && -s $ksrc/Module.symvers ]] ||
  die "$kdir: no built kernel (bzImage, src/Module.symvers): run build-kernel.sh first"
[[ $(id -u) -eq 0 ]] || die "run as root (installs packages)"
out=$kdir/scoutfs
if [[ -s $out/scoutfs.ko && -x $out/scoutfs ]]; then
  echo "$(basename "$kdir"): scoutfs already built: $out"
  exit 0
fi
need_debs git build-essential libelf-dev uuid-dev libssl-dev libblkid-dev sparse
git_dir=${SCOUTFS_GIT_DIR:-$TARGETS_CACHE/scoutfs.git}
if [[ ! -d $git_dir ]]; then
  git clone -q --bare https://github.com/versity/scoutfs "$git_dir" ||
    die "could not clone github.com/versity/scoutfs into $git_dir (set SCOUTFS_GIT_DIR to a copy)"
fi
ref=${SCOUTFS_REF:-HEAD}
rev=$(git --git-dir="$git_dir" rev-parse --short=8 "$ref^{commit}") || die "$git_dir: no commit $ref"
start=$(date +%s)
rm -rf "$out" && mkdir -p "$out/src"
git --git-dir="$git_dir" archive --format=tar "$rev" | tar -x -C "$out/src"
log=$out/build.log
: >"$log"

build_kmod() {
  nice -n 19 make -C "$ksrc" M="$out/src/kmod/src" CONFIG_SCOUTFS_FS=m DISABLE_WERROR=1 \
    SCOUTFS_GIT_DESCRIBE="$rev" -j"${JOBS:-2}" >>"$log" 2>&1
}

compat=none
if ! build_kmod; then
  # scoutfs dropped its older-kernel paths in Nov 2025 (readahead via ->readpages, the
  # 3-argument RB_DECLARE_CALLBACKS); EL 8.3 needs them: restore them and retry once.
  echo "== kmod failed at $rev; retrying with 1af10406 and 94d06e65 reverted" >>"$log"
  for c in 1af10406 94d06e65; do
    git --git-dir="$git_dir" diff-tree -p "$c" | patch -R -p1 -d "$out/src" >>"$log" 2>&1 ||
      die "$(basename "$kdir"): reverting scoutfs $c failed, see $log"
  done
  compat="reverted 1af10406 94d06e65"
  build_kmod || { grep -E 'error' "$log" | tail -n 15 >&2; die "$(basename "$kdir"): scoutfs kmod build failed, see $log"; }
fi
echo "== utils" >>"$log"
nice -n 19 make -C "$out/src/utils" >>"$log" 2>&1 ||
  { tail -n 15 "$log" >&2; die "scoutfs utils build failed, see $log"; }
cp "$out/src/kmod/src/scoutfs.ko" "$out/src/utils/src/scoutfs" "$out/"
secs=$(($(date +%s) - start))
printf 'scoutfs=%s\nkernel=%s\ncompat=%s\nseconds=%s\n' "$rev" "$(basename "$kdir")" "$compat" "$secs" \
  >"$out/scoutfs-info"
echo "$(basename "$kdir"): scoutfs $rev built ($compat) in $secs s: $out/scoutfs.ko $out/scoutfs"
