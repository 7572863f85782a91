"""``python -m examples.shop``: run the shop until Ctrl-C."""

from examples.shop._run import main

main()
