"""scoutfs-collect: a flight recorder for the scoutfs clustered filesystem.

The public plugin API is re-exported here; see :mod:`scoutfs_collect.plugin.hookspecs` and
:mod:`scoutfs_collect.plugin.api`.
"""

from scoutfs_collect.plugin.api import (
    Collector,
    PluginContext,
    Problem,
    Target,
    ThreadedTrigger,
    Trigger,
    Wakeup,
)
from scoutfs_collect.plugin.hookspecs import hookimpl
from scoutfs_collect.plugin.options import option

# The one place the version is written: pyproject.toml reads it (dynamic version), so the
# installed package metadata, `scoutfs-collect --version` and manifest.json agree.
__version__ = "0.1.0"

__all__ = [
    "Collector",
    "PluginContext",
    "Problem",
    "Target",
    "ThreadedTrigger",
    "Trigger",
    "Wakeup",
    "hookimpl",
    "option",
    "__version__",
]
