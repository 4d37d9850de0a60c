"""``python -m skewguard``: the program, for child processes that must use this interpreter."""

from skewguard.entry import main

main()
