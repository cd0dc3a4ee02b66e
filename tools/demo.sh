#!/usr/bin/env bash
# Install scoutfs-collect and make a first real archive with the built-in demo profile
# (no scoutfs needed: real ftrace, packets on lo, kernel log, a simulated scoutfs sysfs
# tree; it triggers by itself after 8 s), then show what the archive holds. As root.
#   bash tools/demo.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(bash tools/setup.sh 3.11 | tail -n 1)
bin=$(dirname "$py")
out=${1:-$PWD/demo-output}
mkdir -p "$out"
"$bin/scoutfs-collect" --profile demo --output-dir "$out" 127.0.0.1 7000 | tee "$out/.last-run"
archive=$(sed -n 's/^archive: //p' "$out/.last-run" | tail -n 1)
rm -f "$out/.last-run"
"$bin/scoutfs-collect" inspect "$archive"
