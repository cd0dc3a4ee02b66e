"""Built-in profiles (YAML files beside this module)."""
