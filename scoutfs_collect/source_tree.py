"""Running from a checkout that is not installed (``PYTHONPATH=CHECKOUT python -m scoutfs_collect``).

Two installed packages come from top-level directories of the checkout (pyproject's
``[tool.setuptools.package-dir]``): ``scoutfs_collect.builtin_plugins`` from ``plugins/``
and ``scoutfs_collect.profiles`` from ``profiles/``. An install (wheel, pex, editable)
lays them out under ``scoutfs_collect``; a bare checkout does not. :class:`SourceTreeFinder`
gives the same mapping to the import system, and only as a last resort: it sits at the end
of ``sys.meta_path`` (an installed package of that name is always found first) and answers
only when the directory above the package holds this project's ``pyproject.toml``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

#: Installed package -> its directory in the checkout (pyproject's package-dir, kept equal by a test).
PACKAGE_DIRS = {
    "scoutfs_collect.builtin_plugins": "plugins",
    "scoutfs_collect.profiles": "profiles",
}


class SourceTreeFinder:
    """Finds the packages of :data:`PACKAGE_DIRS` in the checkout at ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: object = None) -> Optional[ModuleSpec]:
        directory = PACKAGE_DIRS.get(fullname)
        if directory is None or not is_checkout(self.root):
            return None
        init = os.path.join(self.root, directory, "__init__.py")
        if not os.path.isfile(init):
            return None
        import importlib.util  # here: importing scoutfs_collect stays as light as it was

        # Its subpackages (builtin_plugins.collectors, ...) are then found in that directory
        # by the ordinary path finder.
        return importlib.util.spec_from_file_location(
            fullname, init, submodule_search_locations=[os.path.dirname(init)])


def is_checkout(root: str) -> bool:
    """Whether ``root`` is a checkout of scoutfs-collect (not, say, a site-packages)."""
    try:
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
            return 'name = "scoutfs-collect"' in f.read()
    except OSError:
        return False


def install(package_dir: str) -> None:
    """Put a :class:`SourceTreeFinder` for the checkout above ``package_dir`` last on
    ``sys.meta_path`` (once). Costs nothing until an import is otherwise not found."""
    root = os.path.dirname(os.path.abspath(package_dir))
    if not any(isinstance(f, SourceTreeFinder) and f.root == root for f in sys.meta_path):
        sys.meta_path.append(SourceTreeFinder(root))
