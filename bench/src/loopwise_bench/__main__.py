"""``python -m loopwise_bench`` is the ``loopwise-bench`` command."""

from loopwise_bench.cli import main

main()
