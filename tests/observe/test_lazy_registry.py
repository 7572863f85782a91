"""keel's counters run without prometheus_client and join its registry when it loads.

Each case runs in a fresh interpreter: whether a module is imported is a
process-wide fact.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_store_calls_count_before_prometheus_is_imported_and_show_after() -> None:
    out = _run(
        """
        import asyncio, sys
        import keel

        async def main():
            async with await keel.connect("memory://") as store:
                await store.put("a", b"1")
                await store.get("a")
                await store.get("a")

        asyncio.run(main())
        print("loaded-before", "prometheus_client" in sys.modules)
        import prometheus_client

        text = prometheus_client.generate_latest().decode()
        for line in text.splitlines():
            if line.startswith("keel_store_operations_total") and 'operation="get"' in line:
                print(line)
        """
    )
    assert "loaded-before False" in out
    assert 'keel_store_operations_total{operation="get",store="memory"} 2.0' in out


def test_component_series_registered_late_are_scraped_once() -> None:
    out = _run(
        """
        from keel.observe import component_metrics

        m = component_metrics()
        m.session_opened("etcd")
        m.keepalive("etcd", 0.002)
        m.endpoint("etcd", "127.0.0.1:2379")
        m.endpoint("etcd", "127.0.0.1:2380", previous="127.0.0.1:2379")
        import prometheus_client

        text = prometheus_client.generate_latest().decode()
        print(text.count("# TYPE keel_sessions gauge"))
        for name in ("keel_sessions{", "keel_store_failovers_total{",
                     "keel_session_keepalive_seconds_count{", "keel_store_endpoint{"):
            print(*[line for line in text.splitlines() if line.startswith(name)], sep="\\n")
        """
    )
    assert out.splitlines()[0] == "1"
    assert 'keel_sessions{store="etcd"} 1.0' in out
    assert 'keel_store_failovers_total{store="etcd"} 1.0' in out
    assert 'keel_session_keepalive_seconds_count{store="etcd"} 1.0' in out
    assert 'keel_store_endpoint{endpoint="127.0.0.1:2379",store="etcd"} 0.0' in out
    assert 'keel_store_endpoint{endpoint="127.0.0.1:2380",store="etcd"} 1.0' in out


def test_series_made_after_the_import_register_at_once() -> None:
    out = _run(
        """
        import prometheus_client
        from keel.observe import store_metrics

        store_metrics().series("memory").ops["get"].calls += 3
        text = prometheus_client.generate_latest().decode()
        print(*[l for l in text.splitlines() if l.startswith("keel_store_operations_total")])
        """
    )
    assert out.strip() == 'keel_store_operations_total{operation="get",store="memory"} 3.0'


def test_a_store_read_from_the_cli_loads_neither_prometheus_nor_opentelemetry(
    tmp_path: Path,
) -> None:
    keel = str(Path(sys.executable).with_name("keel"))
    url = f"sqlite:///{tmp_path / 'k.db'}"
    subprocess.run([keel, "--store", url, "store", "put", "k", "v"], check=True, timeout=60)
    out = _run(
        """
        import sys
        from keel.cli import main

        url = sys.argv[1]
        sys.argv = ["keel", "--store", url, "store", "get", "k"]
        try:
            main()
        except SystemExit:
            pass
        heavy = {m.split(".")[0] for m in sys.modules} & {"prometheus_client", "opentelemetry"}
        print("heavy:", sorted(heavy))
        """,
        url,
    )
    assert out == "vheavy: []\n"  # the value as stored (no newline added off a terminal)
