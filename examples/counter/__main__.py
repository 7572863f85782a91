"""``python -m examples.counter [--workers N] [--port P] [--store URL]``: serve until Ctrl-C."""

import argparse

import uvloop

from keel.service import Service


def main() -> None:
    """Parse the options and serve ``examples.counter:app``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--store", default=None, help="store URL (default: KEEL_STORE)")
    parser.add_argument("--app", default="examples.counter:app", help="module:attribute")
    args = parser.parse_args()
    service = Service("counter", args.app, store=args.store, port=args.port, workers=args.workers)
    uvloop.run(service.serve())


main()
