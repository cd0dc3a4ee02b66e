"""Built-in collector types, one module each (listed in core/registry.py BUILTIN_PLUGINS)."""
