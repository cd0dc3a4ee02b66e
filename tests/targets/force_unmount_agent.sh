#!/bin/sh
# The target tier's stand-in fence agent (SCOUTFS_FENCED_RUN's agent, after our hook): it
# records as tests/support/fence_agent.sh does (start time, argv, environment), then fences
# the victim as scoutfs's own test suite does with several mounts on one host
# (tests/fenced-local-force-unmount.sh): `umount -f` of the mount whose rid is
# SCOUTFS_FENCED_REQ_RID. A real agent powers the client's machine off.
# `umount -f` first makes the mount's pending operations fail (scoutfs's umount_begin); a
# task still inside one (blocked on the cut connection) holds the mount until it returns,
# so a busy mount is tried again, 10 times at most, 0.5 s apart; then it says what holds
# it (mount_holders.sh) and fails. Nothing here stats the mount: on a cut client that blocks.
here=$(dirname "$0")
"$here/../support/fence_agent.sh" exit 0 || exit
mounted() { grep -q " $1 scoutfs " /proc/self/mounts; }
for fs in /sys/fs/scoutfs/*; do
  [ "$(cat "$fs/rid" 2>/dev/null)" = "$SCOUTFS_FENCED_REQ_RID" ] || continue
  mnt=$(findmnt -l -n -t scoutfs -o TARGET -S "$(cat "$fs/data_device_maj_min")")
  [ -n "$mnt" ] || continue
  tries=0
  until umount -f "$mnt"; do
    mounted "$mnt" || break
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then sh "$here/mount_holders.sh" "$mnt" >&2; exit 1; fi
    sleep 0.5
  done
  echo "force unmount of $mnt: $((tries + 1)) tries" >&2
done
exit 0
