"""Built-in trigger types, one module each, registered by entry point."""
