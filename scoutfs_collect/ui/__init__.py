"""What the operator sees: the console, status line and inspect rendering."""
