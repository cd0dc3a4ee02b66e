"""Built-in scoutfs-collect plugins, one module each, registered through entry points."""
