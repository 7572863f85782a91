"""A test service exporting ``canary_errors_total`` on ``/metrics`` for Prometheus to scrape.

``python -m tests.config._errors_service PORT``; stdin lines ``rise`` (count 200
errors a second) and ``calm`` (stop counting) steer it. Prints ``READY``.
"""

from __future__ import annotations

import sys
import threading
import time

from prometheus_client import CollectorRegistry, Counter, start_http_server


def main() -> None:
    """Serve the counter; follow the commands on stdin until it closes."""
    registry = CollectorRegistry()
    errors = Counter("canary_errors", "Errors seen by the test service.", registry=registry)
    start_http_server(int(sys.argv[1]), addr="127.0.0.1", registry=registry)
    rising = threading.Event()

    def count() -> None:
        while True:
            if rising.is_set():
                errors.inc(20)
            time.sleep(0.1)

    threading.Thread(target=count, daemon=True).start()
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "rise":
            rising.set()
        elif line.strip() == "calm":
            rising.clear()


if __name__ == "__main__":
    main()
