"""``python -m loopwise`` is the ``loopwise`` command."""

from loopwise.cli import main

main()
