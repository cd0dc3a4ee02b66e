#!/usr/bin/env bash
# Install everything and run the test suite on Python 3.9 and 3.11, as root.
#   bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pythons < <(bash tools/setup.sh --test 3.9 3.11)
"${pythons[-1]}" -m ruff check .
status=0
for py in "${pythons[@]}"; do
  echo "=== tests on $("$py" --version) ==="
  "$py" -m pytest -q "$@" || status=$?
done
exit "$status"
