#!/usr/bin/env bash
# Install everything and run the test suite on Python 3.9 and 3.11, as root.
#   bash tools/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pythons < <(bash tools/setup.sh --test 3.9 3.11)
"${pythons[-1]}" -m ruff check .
# The pex, wheelhouse, man page and completion, built once for the dist tests of every Python.
bash tools/build-dist.sh
export SCOUTFS_COLLECT_DIST="$PWD/dist"
status=0
# Everything on the first Python (3.9, RHEL 9's system Python); the tests marked "once"
# (their subject is the kernel or an outside program, see pyproject.toml) not again on the others.
only=()
for py in "${pythons[@]}"; do
  echo "=== tests on $("$py" --version) ${only[*]} ==="
  "$py" -m pytest -q "${only[@]}" "$@" || status=$?
  only=(-m "not once")
done
exit "$status"
