"""``python -m scoutfs_collect`` is the ``scoutfs-collect`` command."""

import sys

from scoutfs_collect.entry import main

sys.exit(main())
