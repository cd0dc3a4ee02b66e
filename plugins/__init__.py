"""Built-in scoutfs-collect plugins, one module each, installed as
``scoutfs_collect.builtin_plugins``. Each registers its types with ``@hookimpl``
``scoutfs_collect_register`` as a third-party plugin does; the registry imports them from
its list ``BUILTIN_PLUGINS`` (scoutfs_collect/core/registry.py): add a new one there."""
