"""SELinux, read from the kernel: may the tcpdump we start write into the output directory?

RHEL runs SELinux enforcing with the targeted policy. There ``/usr/sbin/tcpdump`` is
``netutils_exec_t`` and the policy moves a process that executes it from a few domains
into ``netutils_t``, a domain that may create files only in ``/tmp``. Everywhere else
(``/var/lib/scoutfs-collect``, ``/root``, a home directory) its ``-w`` is denied and the
capture cannot start. Whether that happens depends on the domain scoutfs-collect itself runs
in; on a stock node it does not (see below), and then this module says nothing.

What the policy says (fedora-selinux/selinux-policy, branch c9s for RHEL 9; the f28..f31
branches, the bases of RHEL 8's 3.14.1 and 3.14.3, have the same rules):

* ``netutils.fc:26``: ``/usr/sbin/tcpdump`` is ``netutils_exec_t``.
* ``netutils.te:17`` ``init_system_domain(netutils_t, netutils_exec_t)`` expands
  (``init.if:390``) to ``type_transition initrc_domain netutils_exec_t:process netutils_t``;
  ``initrc_domain`` holds ``init_t`` (``init.te:100``) and ``initrc_t`` (``init.te:133``).
  ``netutils_run(sysadm_t, ...)`` (``sysadm.te:438``) and ``netutils_domtrans($1_sudo_t)``
  (``sudo.if:108``) add confined administrators. No rule names ``unconfined_t`` (a root
  shell) or ``unconfined_service_t`` (a unit without a policy of its own: systemd moves
  ``init_t`` there when it executes a ``bin_t`` program, ``init.te:895``): from those
  tcpdump keeps the caller's unconfined domain and writes anywhere.
* ``netutils_t`` may create files only through ``files_tmp_filetrans(netutils_t,
  netutils_tmp_t, { file dir })`` and ``manage_files_pattern(netutils_t, netutils_tmp_t,
  netutils_tmp_t)`` (``netutils.te:56-58``): in a ``tmp_t`` directory (the file becomes
  ``netutils_tmp_t``) or a ``netutils_tmp_t`` one. ``var_lib_t``, ``admin_home_t``,
  ``user_home_t``, ``var_log_t`` have no such rule. It may search the way there: every
  ``domain`` may search ``var_t``, ``var_lib_t`` and ``admin_home_t`` directories (checked in
  the m4-expanded policy.conf of the c9s branch), but not ``user_home_dir_t``, so an output
  dir below ``/home/USER`` cannot be made writable by a label alone.
* The fix labels the output dir ``netutils_tmp_t``: the work dir that scoutfs-collect
  makes in it keeps that type, tcpdump manages files of it, and the domains that enter
  netutils_t (init_t, sysadm_t) manage every ``non_security_file_type`` directory.

State is read with the kernel's own interfaces, no library: the mode from selinuxfs
(``/sys/fs/selinux/enforce``; no selinuxfs means SELinux is off), every label from the
``security.selinux`` extended attribute (of the output directory, of the tcpdump binary,
and of ``/proc/self``, whose label is this process's domain).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import Optional, Union

SELINUXFS = Path("/sys/fs/selinux")
SELF = Path("/proc/self")  # its security.selinux label is the domain of this process
XATTR = "security.selinux"

TCPDUMP_EXEC_TYPE = "netutils_exec_t"  # netutils.fc:26
TCPDUMP_DOMAIN = "netutils_t"
#: Domains with ``type_transition D netutils_exec_t:process netutils_t`` that a
#: scoutfs-collect can run in (init.te:100,133 via init.if:390; sysadm.te:438); also
#: every ``*_sudo_t`` (sudo.if:108).
ENTERS_TCPDUMP_DOMAIN = frozenset({"init_t", "initrc_t", "sysadm_t"})
#: Directory types in which netutils_t may create the pcap files (netutils.te:56-58).
WRITABLE_DIR_TYPES = frozenset({"tmp_t", "netutils_tmp_t"})
#: What the fix labels the output directory with: netutils_t manages files of this type
#: (netutils.te:56-57) and a directory made inside keeps it.
FIX_TYPE = "netutils_tmp_t"

Pathish = Union[str, Path]


@dataclasses.dataclass(frozen=True)
class Labels:
    """What the kernel says, as far as the tcpdump question needs it.

    ``mode`` is ``enforcing``, ``permissive`` or ``disabled``; each type is the third field
    of a ``security.selinux`` label, or None where there is none (no SELinux, no file).
    """

    mode: str
    own_domain: Optional[str] = None
    tcpdump_type: Optional[str] = None
    dir_type: Optional[str] = None

    @property
    def tcpdump_domain(self) -> Optional[str]:
        """The domain tcpdump will run in: netutils_t where the policy moves it there,
        else this process's own domain."""
        if self.tcpdump_type == TCPDUMP_EXEC_TYPE and self.own_domain is not None and (
            self.own_domain in ENTERS_TCPDUMP_DOMAIN or self.own_domain.endswith("_sudo_t")
        ):
            return TCPDUMP_DOMAIN
        return self.own_domain


def label_type(path: Pathish) -> Optional[str]:
    """The type field of ``path``'s ``security.selinux`` label (symlinks followed), or None
    when it has none: no SELinux (ENODATA, ENOTSUP) or no such file."""
    try:
        raw = os.getxattr(path, XATTR)
    except OSError:
        return None
    fields = raw.rstrip(b"\0").decode("ascii", "replace").split(":")
    return fields[2] if len(fields) >= 3 else None


def read_mode(selinuxfs: Pathish = SELINUXFS) -> str:
    """``enforcing``, ``permissive`` or ``disabled`` (selinuxfs not mounted or no policy)."""
    try:
        value = (Path(selinuxfs) / "enforce").read_text().strip()
    except OSError:
        return "disabled"
    return "enforcing" if value == "1" else "permissive"


def read_labels(output_dir: Pathish, tcpdump: Pathish, selinuxfs: Optional[Pathish] = None,
                self_path: Optional[Pathish] = None) -> Labels:
    """The mode, this process's domain (the label of ``self_path``), tcpdump's file type and
    the output directory's type. Nothing but the mode is read when SELinux is off.
    ``selinuxfs`` and ``self_path`` default to :data:`SELINUXFS` and :data:`SELF`."""
    mode = read_mode(SELINUXFS if selinuxfs is None else selinuxfs)
    if mode == "disabled":
        return Labels(mode)
    me = SELF if self_path is None else self_path
    return Labels(mode, label_type(me), label_type(tcpdump), label_type(output_dir))


def fix_commands(output_dir: Pathish) -> str:
    """The commands that label ``output_dir`` (and what is made in it) for tcpdump."""
    real = os.path.realpath(output_dir)
    spec = shlex.quote(f"{real}(/.*)?")
    return (f"semanage fcontext -a -t {FIX_TYPE} {spec} && restorecon -Rv {shlex.quote(real)}")


@dataclasses.dataclass(frozen=True)
class Denial:
    """What preflight says: the denial, the commands that prevent it, and whether it will
    happen (enforcing) or would only be logged (permissive)."""

    message: str
    fix: str
    enforcing: bool


def tcpdump_write_denial(labels: Labels, output_dir: Pathish) -> Optional[Denial]:
    """None unless tcpdump will run in netutils_t and may not create files in a directory
    of the output dir's type."""
    if labels.mode == "disabled" or labels.tcpdump_domain != TCPDUMP_DOMAIN:
        return None
    if labels.dir_type in WRITABLE_DIR_TYPES:
        return None
    where = f"output dir {output_dir} ({labels.dir_type or 'unlabelled'})"
    if labels.mode == "enforcing":
        return Denial(f"SELinux is enforcing and tcpdump, started from {labels.own_domain}, "
                      f"runs in {TCPDUMP_DOMAIN}, which may not write into {where}",
                      fix_commands(output_dir), True)
    return Denial(f"SELinux is permissive: tcpdump in {TCPDUMP_DOMAIN} may not write into "
                  f"{where} and would be denied when enforcing", fix_commands(output_dir), False)
