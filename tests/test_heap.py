"""The archive readers' heap setting (scoutfs_collect.system.heap)."""

from __future__ import annotations

import platform

import pytest

from scoutfs_collect.system import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_setting_and_takes_it_again():
    """On glibc (RHEL's and Debian's C library) both thresholds are accepted, and a second
    call (report's findings process inherits the first) is accepted too."""
    assert heap.keep_freed_memory() is True
    assert heap.keep_freed_memory() is True
