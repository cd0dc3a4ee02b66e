#!/usr/bin/env bash
# Install what scoutfs-collect needs on this machine, idempotently, as root:
#   system tools (trace-cmd, tcpdump, zstd; with --test also openssh-server for the cluster
#   tests' hosts) from the distribution, tracefs mounted,
#   and a virtualenv per requested Python with scoutfs-collect installed in it.
# Usage: tools/setup.sh [--test] [PYTHON_MINOR ...]     e.g. tools/setup.sh --test 3.9 3.11
# Prints the path of each virtualenv's python, one per line, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.11)

need=()
for tool in trace-cmd tcpdump zstd; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  elif command -v dnf >/dev/null 2>&1; then
    echo "installing ${need[*]} with dnf" >&2
    dnf install -y -q "${need[@]}" >&2
  else
    echo "please install: ${need[*]}" >&2
    exit 1
  fi
fi

# The cluster tests' hosts (tests/support/testhosts.py) each run their own sshd from
# Debian's openssh-server in a network namespace; the system sshd is never started.
if [ -n "$extras" ] && { [ ! -x /usr/sbin/sshd ] || ! command -v ip >/dev/null 2>&1; } \
   && command -v apt-get >/dev/null 2>&1; then
  echo "installing openssh-server iproute2 with apt-get (the system sshd is not started)" >&2
  policy_made=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep invoke-rc.d from starting ssh.service
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client iproute2 >&2 \
    || { [ -n "$policy_made" ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ -n "$policy_made" ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -e /sys/kernel/tracing/tracing_on ]; then
  echo "mounting tracefs at /sys/kernel/tracing" >&2
  mount -t tracefs nodev /sys/kernel/tracing
fi

find_python() {  # a python interpreter of minor version $1
  local v=$1 p
  if command -v pyenv >/dev/null 2>&1; then
    local full
    full=$(pyenv versions --bare 2>/dev/null | grep -E "^${v//./\\.}(\.[0-9]+)?$" | sort -V | tail -n 1 || true)
    if [ -n "$full" ]; then
      p=$(PYENV_VERSION="$full" pyenv which python 2>/dev/null || true)
      [ -n "$p" ] && { echo "$p"; return; }
    fi
  fi
  p=$(command -v "python$v" || true)
  [ -n "$p" ] && { echo "$p"; return; }
  echo "Python $v not found (install python$v, or pyenv install $v)" >&2
  return 1
}

for v in "${versions[@]}"; do
  venv=".venv-$v"
  if [ ! -x "$venv/bin/python" ]; then
    "$(find_python "$v")" -m venv "$venv" >&2
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".$extras" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import scoutfs_collect" >&2
  echo "$PWD/$venv/bin/python"
done
