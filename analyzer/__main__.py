"""``python -m analyzer``: the same command line as the ``analyzer`` script."""

from analyzer.cli import main

main()
