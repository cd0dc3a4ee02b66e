"""``python -m scoutfs_collect`` is the ``scoutfs-collect`` command."""

import sys

from scoutfs_collect.core.cli import main

sys.exit(main())
