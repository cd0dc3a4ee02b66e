# Shared by build-kernel.sh, build-scoutfs.sh and ../test-targets.sh (sourced, not run).
# The cache lives outside the clone: SCOUTFS_COLLECT_TARGETS_CACHE, default
# /var/cache/scoutfs-collect-targets; one directory per kernel tag, plus vng/ (virtme-ng's
# own venv) and scoutfs-src/ (the scoutfs sources).

TARGETS_CACHE=${SCOUTFS_COLLECT_TARGETS_CACHE:-/var/cache/scoutfs-collect-targets}
# The version tried on this machine kind; newer ones changed their command line before.
VNG_VERSION=${SCOUTFS_COLLECT_VNG_VERSION:-1.42}
TARGETS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# need_debs PKG...: install the Debian packages not yet installed (one apt-get call).
need_debs() {
  local missing=() p
  command -v dpkg-query >/dev/null || die "needs a Debian/Ubuntu host (apt-get) to install: $*"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "installing: ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends "${missing[@]}" >&2; } || die "apt-get could not install ${missing[*]}"
}

# ensure_vng: virtme-ng in a venv of its own in the cache; sets VNG to its vng and puts the
# venv's bin first on PATH (vng runs virtme-run from PATH).
ensure_vng() {
  VNG=$TARGETS_CACHE/vng/bin/vng
  export PATH=$TARGETS_CACHE/vng/bin:$PATH
  if [[ ! -x $VNG ]]; then
    need_debs python3 python3-venv qemu-system-x86
    rm -rf "$TARGETS_CACHE/vng"
    python3 -m venv "$TARGETS_CACHE/vng" || die "python3 -m venv failed"
    "$TARGETS_CACHE/vng/bin/pip" install -q "virtme-ng==$VNG_VERSION" >&2 ||
      { rm -rf "$TARGETS_CACHE/vng"; die "pip could not install virtme-ng==$VNG_VERSION"; }
  fi
}
