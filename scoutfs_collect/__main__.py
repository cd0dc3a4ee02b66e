"""``python -m scoutfs_collect`` is the ``scoutfs-collect`` command."""

import sys

from .cli import main

sys.exit(main())
