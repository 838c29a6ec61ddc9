"""``python -m logbus``: the same as the ``logbus`` command."""

from logbus.cli import main

main()
