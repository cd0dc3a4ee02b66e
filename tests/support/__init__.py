"""The one set of test helpers, shared by tests/ and bench/: waiting on conditions, kernel
log lines, plugins built outside the runner, the CLI runner (cli.py) and the namespace
test hosts (testhosts.py)."""
