"""Built-in trigger types, one module each (listed in core/registry.py BUILTIN_PLUGINS)."""
