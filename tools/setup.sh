#!/usr/bin/env bash
# Install what scoutfs-collect needs on this machine, idempotently, as root:
#   system tools (trace-cmd, tcpdump, zstd; with --test also chromium, which the report
#   tests render in, openssh-server for the cluster tests' hosts, systemd, man-db and sos
#   for the distribution tests, tshark and nftables for the network incident tests) from
#   the distribution, tracefs mounted,
#   and a virtualenv per requested Python with scoutfs-collect installed in it.
# Usage: tools/setup.sh [--test] [PYTHON_MINOR ...]     e.g. tools/setup.sh --test 3.9 3.11
# Prints the path of each virtualenv's python, one per line, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.11)

apt_need=()
dnf_need=()
want() {  # want COMMAND DEBIAN_PACKAGE RPM_PACKAGE: install the package when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 || { apt_need+=("$2"); dnf_need+=("$3"); }
}
want trace-cmd trace-cmd trace-cmd
want tcpdump tcpdump tcpdump
want zstd zstd zstd
if [ -n "$extras" ]; then
  # The distribution tests: systemd-analyze verifies the unit (and man finds its man page),
  # the real sos report runs the sos plugin.
  want systemd-analyze systemd systemd
  want man man-db man-db
  want sos sosreport sos
  # The report tests render `scoutfs-collect report` in a real browser (headless chromium).
  want chromium chromium chromium
  # The network incident tests (tests/test_tcp_incidents.py): nftables cuts a test host
  # off, tshark's TCP expert analysis is what the tcp analysis is checked against.
  want tshark tshark wireshark-cli
  want nft nftables nftables
fi
if [ ${#apt_need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing ${apt_need[*]} with apt-get" >&2
    apt-get update -qq >&2
    # wireshark-common asks whether non-root users may capture: no (tests capture as root).
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_need[@]}" >&2
  elif command -v dnf >/dev/null 2>&1; then
    echo "installing ${dnf_need[*]} with dnf" >&2
    dnf install -y -q "${dnf_need[@]}" >&2
  else
    echo "please install: ${apt_need[*]}" >&2
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
