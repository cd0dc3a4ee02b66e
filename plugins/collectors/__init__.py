"""Built-in collector types, one module each, registered by entry point."""
