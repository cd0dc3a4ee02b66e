"""What a plugin author reads: the base classes and context (api), the hooks (hookspecs)
and declared options (options). The public names are re-exported by ``scoutfs_collect``."""
