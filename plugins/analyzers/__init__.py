"""Built-in analyzers (``inspect --findings``): one module each, registered like any plugin."""
