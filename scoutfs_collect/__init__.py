"""scoutfs-collect: a flight recorder for the scoutfs clustered filesystem.

The public plugin API is re-exported here; see :mod:`scoutfs_collect.hookspecs` and
:mod:`scoutfs_collect.api`.
"""

from .api import Collector, PluginContext, Problem, Target, ThreadedTrigger, Trigger, Wakeup
from .hookspecs import hookimpl
from .options import option

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
