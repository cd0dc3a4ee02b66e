"""SELinux preflight of the tcpdump collector: may tcpdump write into the output dir?

The real thing cannot be used here: these machines (Debian) boot without the SELinux
LSM, so there is no selinuxfs to read a mode from, the kernel gives no process a domain and
no policy can be loaded (that needs a reboot into SELinux, and guests are not booted by
tests). So the reader is fed two stand-ins, nothing more: the selinuxfs root (a directory
with an ``enforce`` file, or without one for "disabled") and the path whose
``security.selinux`` label is this process's domain (``/proc/self`` on SELinux; here a file
labelled like it). The labels of the output directory and of the tcpdump binary are real
``security.selinux`` extended attributes, set as root with os.setxattr and read back by the
same os.getxattr the check uses on RHEL.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import scoutfs_collect.builtin_plugins.collectors.tcpdump as tcpdump_plugin
from scoutfs_collect.plugin.api import PluginContext, Target
from scoutfs_collect.system import selinux
from tests.support.cli import Cli

# The labels of a RHEL 9 node (targeted policy, MCS level as `ls -Z` shows them).
ROOT_SHELL = "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"
UNIT = "system_u:system_r:unconfined_service_t:s0"
INIT = "system_u:system_r:init_t:s0"
SYSADM = "staff_u:sysadm_r:sysadm_t:s0-s0:c0.c1023"
STAFF_SUDO = "staff_u:staff_r:staff_sudo_t:s0-s0:c0.c1023"
TCPDUMP = "system_u:object_r:netutils_exec_t:s0"
VAR_LIB = "system_u:object_r:var_lib_t:s0"
ADMIN_HOME = "unconfined_u:object_r:admin_home_t:s0"
USER_HOME = "unconfined_u:object_r:user_home_t:s0"
TMP = "system_u:object_r:tmp_t:s0"
NETUTILS_TMP = "system_u:object_r:netutils_tmp_t:s0"


def label(path: Path, context: str) -> Path:
    os.setxattr(path, selinux.XATTR, context.encode() + b"\0")
    return path


class Node:
    """A stand-in selinuxfs and process label, and real labelled files, in ``tmp``."""

    def __init__(self, tmp: Path, mode: str, domain: str) -> None:
        self.selinuxfs = tmp / "selinuxfs"
        self.selinuxfs.mkdir()
        if mode != "disabled":
            (self.selinuxfs / "enforce").write_text("1" if mode == "enforcing" else "0")
        (tmp / "self").touch()
        self.me = label(tmp / "self", domain)  # stands in for /proc/self
        self.tcpdump = tmp / "tcpdump"
        self.tcpdump.write_bytes(b"")
        label(self.tcpdump, TCPDUMP)
        self.out = tmp / "out"
        self.out.mkdir()

    def denial(self, out_label: str):
        label(self.out, out_label)
        labels = selinux.read_labels(self.out, self.tcpdump, self.selinuxfs, self.me)
        return selinux.tcpdump_write_denial(labels, self.out)


@pytest.mark.parametrize("mode", ["enforcing", "permissive", "disabled"])
@pytest.mark.parametrize("out_label,writable", [
    (VAR_LIB, False), (ADMIN_HOME, False), (USER_HOME, False), (TMP, True), (NETUTILS_TMP, True),
])
@pytest.mark.parametrize("domain", [INIT, SYSADM, STAFF_SUDO])
def test_decision_where_tcpdump_enters_netutils_t(tmp_path, mode, out_label, writable, domain):
    """From a domain the policy moves into netutils_t on exec of tcpdump: one line when
    the output dir's type is not one netutils_t may create files in; fatal only when
    enforcing, a note when permissive, nothing when SELinux is off."""
    denial = Node(tmp_path, mode, domain).denial(out_label)
    if mode == "disabled" or writable:
        assert denial is None
        return
    assert denial is not None and "\n" not in denial.message
    assert denial.enforcing is (mode == "enforcing")
    assert f"SELinux is {mode}" in denial.message
    out_type = out_label.split(":")[2]
    assert f"output dir {tmp_path / 'out'} ({out_type})" in denial.message
    assert "netutils_t" in denial.message
    if mode == "permissive":
        assert "would be denied when enforcing" in denial.message
    real = os.path.realpath(tmp_path / "out")
    assert denial.fix == (f"semanage fcontext -a -t netutils_tmp_t '{real}(/.*)?' "
                          f"&& restorecon -Rv {real}")


@pytest.mark.parametrize("domain", [ROOT_SHELL, UNIT])
@pytest.mark.parametrize("out_label", [VAR_LIB, ADMIN_HOME, USER_HOME])
def test_root_shell_and_unit_say_nothing_even_when_enforcing(tmp_path, domain, out_label):
    """No rule moves unconfined_t (a root shell) or unconfined_service_t (the unit's
    runner) into netutils_t: tcpdump keeps their unconfined domain and writes anywhere."""
    node = Node(tmp_path, "enforcing", domain)
    assert selinux.read_labels(node.out, node.tcpdump, node.selinuxfs, node.me).tcpdump_domain \
        == domain.split(":")[2]
    assert node.denial(out_label) is None


def test_a_tcpdump_not_labelled_netutils_exec_t_runs_in_the_callers_domain(tmp_path):
    """A tcpdump outside /usr/sbin (bin_t, e.g. /usr/local/sbin) enters no domain of its own."""
    node = Node(tmp_path, "enforcing", INIT)
    label(node.tcpdump, "system_u:object_r:bin_t:s0")
    assert node.denial(VAR_LIB) is None


def test_unlabelled_output_dir_is_named_so(tmp_path):
    """A file system without labels (no security.selinux) gets the same one line."""
    node = Node(tmp_path, "enforcing", SYSADM)
    labels = selinux.read_labels(node.out, node.tcpdump, node.selinuxfs, node.me)
    assert labels.dir_type is None
    denial = selinux.tcpdump_write_denial(labels, node.out)
    assert denial is not None and "(unlabelled)" in denial.message


def test_fix_quotes_a_path_with_spaces(tmp_path):
    odd = tmp_path / "pcap dir"
    odd.mkdir()
    fix = selinux.fix_commands(odd)
    assert fix.startswith(f"semanage fcontext -a -t netutils_tmp_t '{odd}(/.*)?' && ")
    assert fix.endswith(f"restorecon -Rv '{odd}'")


@pytest.mark.parametrize("mode", ["enforcing", "permissive"])
def test_tcpdump_preflight_reports_it_fatal_only_when_enforcing(tmp_path, monkeypatch, mode):
    """The collector's own preflight, with the real tcpdump (copied, to carry the RHEL label
    without touching the system's binary) compiling its filter on lo: the SELinux line is
    among its problems, an error when enforcing, a note when permissive."""
    node = Node(tmp_path, mode, SYSADM)
    label(node.out, VAR_LIB)
    bin_dir = tmp_path / "sbin"
    bin_dir.mkdir()
    real = shutil.which("tcpdump", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    assert real
    shutil.copy(real, bin_dir / "tcpdump")
    label(bin_dir / "tcpdump", TCPDUMP)
    monkeypatch.setattr(tcpdump_plugin, "_SEARCH_PATH", str(bin_dir))
    monkeypatch.setattr(selinux, "SELINUXFS", node.selinuxfs)
    monkeypatch.setattr(selinux, "SELF", node.me)
    ctx = PluginContext(name="tcpdump", type_name="tcpdump", target=Target("127.0.0.1", 7000),
                        workdir=tmp_path / "unused", dry_run=True, output_dir=node.out)
    c = tcpdump_plugin.Tcpdump(ctx, tcpdump_plugin.Tcpdump.Options(interface="lo",
                                                                   heartbeat_timeout=0))
    problems = c.preflight()
    assert [(p.fatal, p.message.split(":")[0].split(" and ")[0]) for p in problems] == \
        [(mode == "enforcing", f"SELinux is {mode}")]
    assert problems[0].fix.startswith("semanage fcontext -a -t netutils_tmp_t ")


def test_check_on_a_machine_without_selinux_says_nothing_about_it(tmp_path):
    """End to end: the real selinuxfs is absent here, so `check` with a tcpdump collector
    prints no SELinux line and passes."""
    assert not Path("/sys/fs/selinux/enforce").exists()  # what this machine is (see module doc)
    assert shutil.which("tcpdump", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    cli = Cli(tmp_path)
    profile = tmp_path / "p.yaml"
    profile.write_text("collectors:\n  tcpdump: {interface: lo, heartbeat_timeout: 0}\n"
                       "triggers:\n  never: {type: test-never}\n")
    done = cli.run("check", *cli.capture_args(profile))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check: ready to run" in done.stderr
    assert "selinux" not in (done.stdout + done.stderr).lower()
