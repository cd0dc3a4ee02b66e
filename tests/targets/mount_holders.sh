#!/bin/sh
# What holds a mount busy (run when `umount` says "target is busy"), without touching the
# mount itself (a stat of a cut scoutfs client blocks): per process its cwd, root, open
# files and mappings under MOUNT, mount namespaces other than ours that have it, and every
# task inside scoutfs (its kernel stack).   mount_holders.sh MOUNT
mnt=$1
me=$(readlink /proc/self/ns/mnt)
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  comm=$(cat "$p/comm" 2>/dev/null)
  for l in "$p/cwd" "$p/root" "$p"/fd/*; do
    t=$(readlink "$l" 2>/dev/null) || continue
    case "$t" in "$mnt"|"$mnt"/*) echo "holder: $pid $comm ${l#$p/} -> $t";; esac
  done
  grep -q " $mnt" "$p/maps" 2>/dev/null && echo "holder: $pid $comm maps a file under $mnt"
  ns=$(readlink "$p/ns/mnt" 2>/dev/null)
  [ -n "$ns" ] && [ "$ns" != "$me" ] && grep -q " $mnt " "$p/mountinfo" 2>/dev/null \
    && echo "holder: $pid $comm mount namespace $ns has $mnt"
  for t in "$p"/task/*; do
    st=$(cat "$t/stack" 2>/dev/null)
    case "$st" in *scoutfs*)
      echo "task ${t#/proc/} $comm state $(cut -d' ' -f3 "$t/stat" 2>/dev/null):"; echo "$st";;
    esac
  done
done
