"""``python -m skewguard``: the CLI, for child processes that must use this interpreter."""

from skewguard.cli import main

main()
