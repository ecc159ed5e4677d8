"""``python -m autotransfer.cli``: the ``autotransfer`` command."""

from autotransfer.cli import main

main()
