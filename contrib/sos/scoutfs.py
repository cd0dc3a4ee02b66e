# sos report plugin for scoutfs and scoutfs-collect.
#
# Install: copy this file into sos's plugin directory on the node, e.g.
#   RHEL 8: /usr/lib/python3.6/site-packages/sos/report/plugins/scoutfs.py
#   RHEL 9: /usr/lib/python3.9/site-packages/sos/report/plugins/scoutfs.py
# then `sos report` runs it wherever scoutfs is loaded (or `sos report -o scoutfs`).
#
# It runs inside sos's own Python (3.6 on RHEL 8), so it uses nothing newer than that and
# nothing from scoutfs_collect. Modelled on sos's own gfs2 plugin. Tested with sos 4.0
# (Debian 12) and 4.12 (its source repository; tests/test_sos_plugin.py, SOS_PACKAGE).

import glob
import os

from sos.report.plugins import DebianPlugin, Plugin, RedHatPlugin, UbuntuPlugin

try:  # sos >= 4.3 declares options as PluginOpt; older sos (Debian 12's 4.0) as tuples
    from sos.report.plugins import PluginOpt
except ImportError:
    PluginOpt = None

SYSFS = "/sys/fs/scoutfs"
DEBUGFS = "/sys/kernel/debug/scoutfs"
ENV_FILE = "/etc/scoutfs-collect/env"
DEFAULT_OUTPUT_DIR = "/var/lib/scoutfs-collect"
ARCHIVE_GLOB = "scoutfs-collect.*.tar.*"  # finished archives; partial ones start with a dot


def _option(name, default, desc):
    if PluginOpt is not None:
        return PluginOpt(name, default=default, desc=desc)
    return (name, desc, "fast", default)


class Scoutfs(Plugin, RedHatPlugin, DebianPlugin, UbuntuPlugin):

    short_desc = "scoutfs clustered filesystem and scoutfs-collect archives"

    plugin_name = "scoutfs"
    profiles = ("storage", "cluster")
    packages = ("scoutfs-utils", "kmod-scoutfs")
    kernel_mods = ("scoutfs",)
    files = (SYSFS, ENV_FILE)

    option_list = [
        _option("archives", 2, "how many of the newest scoutfs-collect archives to collect"),
        _option("archive_dir", "", "where the archives are (default: OUTPUT_DIR of "
                + ENV_FILE + ", else " + DEFAULT_OUTPUT_DIR + ")"),
    ]

    def check_enabled(self):
        # Also when the scoutfs tree is under --sysroot (older sos checks `files` on /).
        return super().check_enabled() or os.path.isdir(self._on_node(SYSFS))

    def _on_node(self, path):
        """Absolute ``path`` of the node as this process sees it (under --sysroot):
        sos >= 4.3 has path_join, older sos (Debian 12's 4.0) join_sysroot."""
        if hasattr(self, "path_join"):
            return self.path_join(path)
        return self.join_sysroot(path)

    def setup(self):
        # Every mount's counters, quorum state, mount and volume options and pending fence
        # requests: small files, taken whole.
        self.add_copy_spec(SYSFS, sizelimit=0)
        self.add_copy_spec(DEBUGFS)
        self.add_copy_spec(ENV_FILE)
        self.add_copy_spec("/etc/scoutfs-collect/profiles")
        archive_dir = self.get_option("archive_dir") or self._configured_output_dir()
        newest = self._newest_archives(archive_dir, int(self.get_option("archives")))
        # An archive is what support asked for: never cut to sos's log size.
        for archive in newest:
            self.add_copy_spec(archive, sizelimit=0, tailit=False)

    def _configured_output_dir(self):
        """OUTPUT_DIR from the systemd unit's env file, as the service would use it."""
        try:
            with open(self._on_node(ENV_FILE)) as env:
                lines = env.read().splitlines()
        except OSError:
            return DEFAULT_OUTPUT_DIR
        for line in lines:
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "OUTPUT_DIR" and value.strip():
                return value.strip().strip("'\"")
        return DEFAULT_OUTPUT_DIR

    def _newest_archives(self, archive_dir, count):
        """The ``count`` newest finished archives in ``archive_dir``, as paths on the node
        (sos adds --sysroot itself)."""
        pattern = os.path.join(self._on_node(archive_dir), ARCHIVE_GLOB)
        found = []
        for path in glob.glob(pattern):
            try:
                found.append((os.stat(path).st_mtime, path))
            except OSError:
                continue
        found.sort(reverse=True)
        return [self.strip_sysroot(path) for _, path in found[:max(count, 0)]]

# vim: et ts=4 sw=4
