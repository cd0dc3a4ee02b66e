#!/bin/sh
# A stand-in for a site's fence agent (scoutfs-fenced's SCOUTFS_FENCED_RUN). A real agent
# powers a machine off over IPMI: in a test a stand-in is the only honest choice. It
# records what a user of the fence hook checks: when it started (epoch seconds, first
# thing, from date), its argv and its environment, into $FENCE_AGENT_RECORD (a
# directory), then ends as its first argument says: "exit N" or "signal NAME".
# POSIX sh, not Python: its start time must not include an interpreter's start-up.
now=$(date +%s.%N)
dir=${FENCE_AGENT_RECORD:?FENCE_AGENT_RECORD not set}
printf '%s\n' "$now" > "$dir/started"
for arg in "$@"; do printf '%s\n' "$arg"; done > "$dir/argv"
env > "$dir/env"
case "$1" in
  exit) exit "$2" ;;
  signal) kill -s "$2" $$ ;;
esac
exit 0
