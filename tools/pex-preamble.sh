# --- scoutfs-collect preamble (tools/pex-preamble.sh, inserted by tools/pex_boot.py) ---
# 1. Lay the pex out where only root can write: the code run as root must not come from a
#    cache that another user (or a HOME kept by sudo) could change. /var/cache is writable by
#    root alone, so `-w` tells root apart without a subprocess; other users get their own.
if [ -z "${PEX_ROOT:-}" ]; then
    if [ -w /var/cache ]; then
        PEX_ROOT=/var/cache/scoutfs-collect/pex
    else
        PEX_ROOT="${HOME:-/nonexistent}/.cache/scoutfs-collect/pex"
    fi
fi
export PEX_ROOT
if [ ! -d "${PEX_ROOT}" ]; then
    (umask 077 && mkdir -p "${PEX_ROOT}")
fi
# 2. The wheels inside are for CPython 3.9-3.13. Where none is on PATH (RHEL 8's python3 is
#    3.6) say so in one line and exit 2, instead of pex's listing of every name it tried.
if [ -z "${PEX_PYTHON:-}" ]; then
    _scoutfs_collect_python=""
    for _name in python3.13 python3.12 python3.11 python3.10 python3.9; do
        if command -v "${_name}" >/dev/null 2>&1; then
            _scoutfs_collect_python="${_name}"
            break
        fi
    done
    if [ -z "${_scoutfs_collect_python}" ] && command -v python3 >/dev/null 2>&1 \
        && python3 -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] < (3, 14))' 2>/dev/null; then
        _scoutfs_collect_python=python3
    fi
    if [ -z "${_scoutfs_collect_python}" ]; then
        _found="$(python3 -V 2>&1 || echo 'no python3')"
        echo >&2 "scoutfs-collect: needs Python 3.9 to 3.13 on PATH, found ${_found}: install one with 'dnf install python3.11' (RHEL 8)"
        exit 2
    fi
fi
# --- end of the scoutfs-collect preamble; pex's own /bin/sh boot follows ---
