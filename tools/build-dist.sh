#!/usr/bin/env bash
# Build what support sends to a node, into dist/:
#   dist/scoutfs-collect.pex                    one file: the tool and every runtime dependency, for
#                                               Linux x86_64 and aarch64, CPython 3.9-3.13, with a
#                                               /bin/sh boot that picks the interpreter on the node
#   dist/scoutfs-collect-wheels-VERSION.tar.gz  the same wheels, for pip install --no-index --find-links
#   dist/scoutfs-collect.8                      man page, generated from the argparse definitions
#   dist/completion/scoutfs-collect.bash, _scoutfs-collect (zsh)   shell completion, likewise
# Needs network to PyPI (not root). Installs pex, argparse-manpage and shtab into .venv-build itself.
#   bash tools/build-dist.sh            (PYTHON=python3.11 to choose the build venv's interpreter)
# The wheels are chosen by platform tags, never by the build machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the node may run: the platforms and Python versions the pex and the wheelhouse cover.
# manylinux_2_28 is RHEL 8's glibc (2.28); pip also accepts every older manylinux tag under it.
ARCHES=(x86_64 aarch64)
PYTHONS=(3.13 3.12 3.11 3.10 3.9)   # newest first: the sh boot tries python3.13, then 3.12, ...
GLIBC=2_28

build=.venv-build
if [ ! -x "$build/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$build"
fi
pip=("$build/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install '.[dist]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
version=$("$build/bin/python" -c 'import importlib.metadata as m; print(m.version("scoutfs-collect"))')

rm -rf dist
mkdir -p dist/completion
wheels="dist/scoutfs-collect-wheels-$version"
mkdir -p "$wheels"

"${pip[@]}" wheel --no-deps -w "$wheels" . 2>&1 | grep -v "^WARNING: Location" >&2 || true
project_wheel=$(ls "$wheels"/scoutfs_collect-"$version"-*.whl)

# One resolver run per platform and Python, all at once (each mostly waits on the index),
# each into its own directory; then the wheels are merged (pure ones come from every run).
platforms=()
for arch in "${ARCHES[@]}"; do
  for py in "${PYTHONS[@]}"; do
    nodot=${py//./}
    { "${pip[@]}" download --only-binary=:all: --dest "$wheels.parts/$arch-$nodot" \
        --platform "manylinux_${GLIBC}_${arch}" --implementation cp --python-version "$py" \
        "$project_wheel" 2>&1 | grep -v "^WARNING: Location" >&2 || true; } &
    platforms+=(--platform "manylinux_${GLIBC}_${arch}-cp-${nodot}-cp${nodot}")
  done
done
wait
for whl in "$wheels.parts"/*/*.whl; do
  [ -e "$wheels/${whl##*/}" ] || cp "$whl" "$wheels/"
done
rm -rf "$wheels.parts"
tar -C dist -czf "$wheels.tar.gz" "$(basename "$wheels")"

# --venv: the first run lays out a venv under PEX_ROOT, later runs exec it directly (the start-up
# of an installed CLI). The interpreter constraint is written into the pex, so its boot picks a
# python3.9-3.13 on the node's PATH; tools/pex_boot.py then adds the preamble for the rest.
# (pex also makes the build venv's Python a target when it fits the constraint: same wheels as
# its platform's, but its name comes first in the boot's list of names to try.)
"$build/bin/pex" --resolver-version pip-2020-resolver --no-pypi --find-links "$wheels" "scoutfs-collect==$version" \
  "${platforms[@]}" --interpreter-constraint 'CPython>=3.9,<3.14' \
  --console-script scoutfs-collect --sh-boot --venv --runtime-pex-root /var/cache/scoutfs-collect/pex \
  --output-file dist/scoutfs-collect.raw.pex >&2
"$build/bin/python" tools/pex_boot.py dist/scoutfs-collect.raw.pex dist/scoutfs-collect.pex
rm -f dist/scoutfs-collect.raw.pex
rm -rf "$wheels"

"$build/bin/argparse-manpage" --module scoutfs_collect.core.arguments --function build_parser \
  --prog scoutfs-collect --project-name scoutfs-collect --version "$version" --manual-section 8 \
  --description "flight recorder for the scoutfs clustered filesystem" \
  --manual-title "System Administration" --output dist/scoutfs-collect.8
"$build/bin/shtab" --shell=bash --prog scoutfs-collect scoutfs_collect.core.arguments.build_parser \
  > dist/completion/scoutfs-collect.bash
"$build/bin/shtab" --shell=zsh --prog scoutfs-collect scoutfs_collect.core.arguments.build_parser \
  > dist/completion/_scoutfs-collect

ls -l dist/scoutfs-collect.pex "$wheels.tar.gz" dist/scoutfs-collect.8 dist/completion/* >&2
