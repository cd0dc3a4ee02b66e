"""Network interfaces as the calling thread's network namespace has them.

/sys/class/net shows the namespace sysfs was mounted in, not the caller's: a process that
entered another network namespace without remounting /sys (``nsenter --net``, a container
sharing the host's /sys) sees there the interfaces of another namespace. A socket belongs
to the namespace of the thread that made it, so ``if_nametoindex`` (SIOCGIFINDEX) and
SIOCGIFHWADDR on one ask the kernel about the caller's own interfaces.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import Optional

SIOCGIFHWADDR = 0x8927


def exists(iface: str) -> bool:
    """Whether ``iface`` is a network interface in this thread's network namespace."""
    if not 0 < len(iface.encode()) < 16:
        return False
    try:
        socket.if_nametoindex(iface)
    except (OSError, ValueError):
        return False
    return True


def interface_type(iface: str) -> Optional[int]:
    """The ARPHRD type (linux/if_arp.h) of ``iface`` in this thread's network namespace,
    or None if there is no such interface."""
    if not 0 < len(iface.encode()) < 16:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", iface.encode()))
        except OSError:
            return None
    return struct.unpack_from("H", ifreq, 16)[0]
