"""Start-up time of the ``keel`` command line, beside ``etcdctl`` doing the same read.

    python bench/cli.py
    python bench/cli.py --runs 20

Each row runs one command ``runs`` times as a new process (after one warm-up
run) and reports the median wall time from start to exit: ``keel --help``,
``keel store get`` on a SQLite file and on a one-member etcd (started here
with keel.testing.EtcdCluster), ``etcdctl get`` of the same key, and
``python -c pass`` as the floor any Python program pays. Target: <= 0.3 s
for each keel row. The machine's load shows in every row alike, so the
ratios to ``etcdctl`` and to the Python floor say more than the absolute
figures on a busy machine.

Prints a table and one JSON document. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keel.testing import EtcdCluster

TARGET_S = 0.3
KEEL = str(Path(sys.executable).with_name("keel"))


def _median_s(argv: list[str], runs: int, env: dict[str, str]) -> float:
    """Median wall time of ``runs`` runs of ``argv`` (one warm-up run first)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _seed(url: str) -> None:
    """Write the key through the CLI (so this script never imports grpc beside bench/grpc.py)."""
    subprocess.run([KEEL, "--store", url, "store", "put", "bench/key", "value"], check=True)


def _rows(runs: int, db: str, etcd_url: str, endpoint: str) -> dict[str, float]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("KEEL_STORE", None)
    # As installed: Python caches bytecode (the warm-up run writes it), so no
    # row pays for compiling source on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    rows = {
        "python -c pass": _median_s([sys.executable, "-c", "pass"], runs, env),
        "keel --help": _median_s([KEEL, "--help"], runs, env),
        "keel store get (sqlite)": _median_s(
            [KEEL, "--store", f"sqlite:///{db}", "store", "get", "bench/key"], runs, env
        ),
        "keel store get (etcd)": _median_s(
            [KEEL, "--store", etcd_url, "store", "get", "bench/key"], runs, env
        ),
    }
    etcdctl = shutil.which("etcdctl")
    if etcdctl:
        ctl_env = {**env, "ETCDCTL_API": "3"}
        argv = [etcdctl, f"--endpoints={endpoint}", "get", "/keel/bench/key"]
        rows["etcdctl get"] = _median_s(argv, runs, ctl_env)
    return rows


def main() -> None:
    """Measure and print the table, then the JSON document."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with EtcdCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        _seed(f"sqlite:///{db}")
        _seed(cluster.url)
        rows = _rows(args.runs, db, cluster.url, cluster.endpoints[0])
    floor = rows["python -c pass"]
    ctl = rows.get("etcdctl get")
    print(f"{'command':<26} {'median':>8} {'x etcdctl':>10} {'x python':>9}  target")
    for name, seconds in rows.items():
        vs_ctl = f"{seconds / ctl:.1f}" if ctl else "-"
        verdict = ("ok" if seconds <= TARGET_S else "OVER") if name.startswith("keel") else ""
        print(f"{name:<26} {seconds:>7.3f}s {vs_ctl:>10} {seconds / floor:>9.1f}  {verdict}")
    load = os.getloadavg()[0]
    print(json.dumps({"runs": args.runs, "target_s": TARGET_S, "load_1m": load, "median_s": rows}))


if __name__ == "__main__":
    main()
