"""keel up's view as data: it fits the screen, decodes records, escapes text, words agree."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
from pathlib import Path
from typing import Any

from rich.console import Console

from keel.cli._up_edge import ConsoleWatch
from keel.cli._up_fmt import count, duration, size, sparkline
from keel.cli._up_lines import PlainLines
from keel.cli._up_shop import SHOP_PORTS, ShopWatch, port_in_use
from keel.cli._up_view import UpView, fit_rows, lateness
from keel.events import GroupStats
from keel.schedule import Execution
from keel.store import Event, EventType, KeyValue

_REV = iter(range(1, 1_000_000))


def put(key: str, value: bytes | str) -> Event:
    """A PUT event as a watch delivers it."""
    raw = value.encode() if isinstance(value, str) else value
    rev = next(_REV)
    return Event(EventType.PUT, KeyValue(key, raw, rev, rev, 1, 0))


def instance(service: str, iid: str, port: int) -> bytes:
    """An instance record as keel.registry writes it."""
    record = {"id": iid, "address": "127.0.0.1", "port": port, "scheme": "http"}
    return json.dumps({"service": service, **record}).encode()


def busy_view() -> UpView:
    """A view with more of everything than 80x24 can show."""
    view = UpView("sqlite:////var/lib/keel/x.db", shop=ShopWatch(8080))
    for i in range(12):
        view.apply(put(f"services/svc{i}/127.0.0.1:{9000 + i}", instance(f"svc{i}", "a", 9000 + i)))
        view.apply(put(f"locks/lock{i}/{i:x}", b""))
        view.apply(put(f"elections/leader{i}/{i:x}", b"node"))
    for i in range(30):
        view.apply(put(f"demo/key{i}", "x" * 300))
    return view


def screen(view: UpView, width: int, height: int) -> list[str]:
    """The rendered lines, as a terminal of that size would get them."""
    console = Console(
        width=width, height=height, record=True, force_terminal=True, file=io.StringIO()
    )
    console.print(view.render(width, height))
    return console.export_text().splitlines()


def test_fits_80x24_with_every_main_panel() -> None:
    """On 80x24 a busy view takes at most 24 lines, each within 80 columns, with all 4 panels."""
    lines = screen(busy_view(), 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    assert all(len(line) <= 80 for line in lines), text
    for title in ("services · 12 instances", "jobs · 0 jobs", "locks and leaders · 24", "recent"):
        assert title in text, text
    assert "more" in text  # what does not fit is counted, not dropped silently


def test_scales_up_on_200x60() -> None:
    """On 200x60 the panels show more rows and the extra panels and legend appear."""
    small = "\n".join(screen(busy_view(), 80, 24))
    lines = screen(busy_view(), 200, 60)
    text = "\n".join(lines)
    assert len(lines) <= 60 and all(len(line) <= 200 for line in lines), text
    assert text.count("svc") > small.count("svc")
    assert "keys by area" in text and "token: the fencing token" in text, text


def test_fit_rows_gives_first_panels_their_rows_first() -> None:
    """Rows go to the first panels up to their keep, then one each in turn."""
    assert fit_rows([6, 1, 3, 12], 11, [8, 4, 4, 1]) == [6, 1, 3, 1]
    assert fit_rows([2, 2], 10, [1, 1]) == [2, 2]
    assert fit_rows([5, 5], 0, [1, 1]) == [0, 0]


def test_health_marks_are_decoded_not_guessed() -> None:
    """A mark that is not failing leaves health alone; a malformed record is skipped."""
    view = UpView("memory://")
    view.apply(put("services/orders/a", instance("orders", "a", 8080)))
    view.apply(put("health/orders/a", b'{"status": "passing"}'))
    row = re.compile(r"^orders\s+http://127.0.0.1:8080\s+UP\s+lease\b", re.M)
    assert row.search("\n".join(screen(view, 120, 30)))
    view.apply(put("health/orders/a", b"not json"))
    assert row.search("\n".join(screen(view, 120, 30)))
    view.apply(put("health/orders/a", b'{"status": "failing", "reason": "timeout"}'))
    assert re.search(r"^orders\s+\S+\s+UP\s+failing", "\n".join(screen(view, 120, 30)), re.M)
    view.apply(put("services/orders/b", b"[1, 2]"))
    assert "services · 1 instance" in "\n".join(screen(view, 120, 30))


def test_store_text_is_escaped() -> None:
    """A key or value with terminal escape codes is shown escaped, never sent raw."""
    view = UpView("memory://")
    view.apply(put("demo/\x1b[2Jevil", "\x1b]0;title\x07"))
    console = Console(width=120, height=30, record=True, force_terminal=True, file=io.StringIO())
    console.print(view.render(120, 30))
    raw = console.export_text(styles=True)
    assert "\x1b[2J" not in raw and "\x1b]0;" not in raw
    assert "\\x1b[2Jevil" in raw


def test_words_agree_with_numbers() -> None:
    """Counts, durations and sparklines are written one way."""
    assert (count(1, "job"), count(2, "job"), count(0, "instance")) == (
        "1 job",
        "2 jobs",
        "0 instances",
    )
    assert [duration(s) for s in (0.0123, 2, 2.5, 45, 300, 7200 * 3)] == [
        "12 ms",
        "2 s",
        "2.5 s",
        "45 s",
        "5 min",
        "6 h",
    ]
    assert [size(n) for n in (812, 600 * 1024, 1_150_000)] == ["812 B", "600 KiB", "1.1 MiB"]
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert sparkline([]) == ""


def test_plain_lines_print_only_changes() -> None:
    """Without a terminal each change is one line; nothing repeats while nothing changes."""
    view = UpView("sqlite:////var/lib/keel/x.db")
    lines = PlainLines()
    first = list(lines.changes(view))
    assert len(first) == 1 and first[0].endswith("store sqlite:////var/lib/keel/x.db")
    assert list(lines.changes(view)) == []
    view.apply(put("locks/demo/1", b""))
    (held,) = lines.changes(view)
    assert "lock demo: held by a session" in held
    view.coord.clear()
    (free,) = lines.changes(view)
    assert free.endswith("lock demo: free")


def test_shop_metrics_become_rates_and_5xx_problems() -> None:
    """Two /metrics scrapes give a request rate per service; new 5xx responses are a problem."""
    shop = ShopWatch(8080)
    sample = 'keel_http_server_requests_total{{service="orders",status="{s}"}} {n}\n'
    shop.fold(sample.format(s="200", n=10), now=100.0)
    shop.fold(sample.format(s="200", n=30) + sample.format(s="500", n=2), now=102.0)
    assert list(shop.rates["orders"]) == [11.0]
    assert list(shop.error_rates["orders"]) == [1.0]
    assert shop.problems and "2 more 5xx" in shop.problems[-1]
    view = UpView("sqlite:///x.db", shop=shop)
    view.apply(put("services/orders/127.0.0.1:8081", instance("orders", "a", 8081)))
    text = "\n".join(screen(view, 100, 30))
    assert "5xx/s" in text and re.search(r"11\.0/s \S+\s+1\.0 ", text), text


def test_job_lateness_is_start_minus_fire() -> None:
    """'late' is how long after its fire a scheduled run started; manual runs are never late."""
    run = Execution(job="j", name="r", handler="h", fire=100.0, started_at=100.25)
    assert lateness(run) == 0.25
    assert lateness(Execution(job="j", name="r", handler="h", fire=100.0)) == 0.0
    manual = Execution(job="j", name="r", handler="h", fire=100.0, started_at=160.0, kind="manual")
    assert lateness(manual) == 0.0


def test_port_in_use_sees_a_listener() -> None:
    """A listening socket makes its port 'in use'; a closed one does not."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


async def test_a_crashed_example_is_a_problem_in_the_view(tmp_path: Path, monkeypatch: Any) -> None:
    """An example that exits shows its exit code and last line of output, not /dev/null."""
    shop = tmp_path / "examples" / "shop"
    shop.mkdir(parents=True)
    (tmp_path / "examples" / "__init__.py").write_text("")
    (shop / "__init__.py").write_text("")
    (shop / "__main__.py").write_text(
        "print('ValueError: no such sku', flush=True)\nraise SystemExit(3)\n"
    )
    monkeypatch.chdir(tmp_path)
    watch = ShopWatch(free_ports(SHOP_PORTS))
    async with asyncio.timeout(30):
        await watch.run(f"sqlite:///{tmp_path / 'x.db'}")
    assert watch.state == "exited (3)"
    assert "shop: ValueError: no such sku" in watch.problems
    assert "shop exited with code 3: ValueError: no such sku" in watch.problems


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on now (the shop uses a block)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no block of {count} free ports")


def _gateway_config(content: str, version: int = 1) -> Event:
    record = {
        "name": "gateway.yaml",
        "content": content,
        "format": "yaml",
        "version": version,
        "author": "shop",
        "comment": "",
        "published_at": 1.0,
    }
    return put("config/gateway.yaml", json.dumps(record))


def test_edges_show_the_gateway_routes_and_the_console() -> None:
    """The header names the gateway's routes (validated, not raw) and the console's address."""
    view = busy_view()
    assert view.shop is not None
    view.shop.state = "up"
    routes = "routes:\n  - id: o\n    match: {path: /orders, methods: [POST]}\n"
    view.apply(_gateway_config(routes + "    forward: {service: orders}\n"))
    view.console_watch = ConsoleWatch(8470, url="http://127.0.0.1:8470", hint="no user yet")
    text = "\n".join(screen(view, 120, 30))
    assert "gateway POST /orders → orders" in text, text
    assert "console http://127.0.0.1:8470  first user: keel console adduser" in text, text
    view.apply(_gateway_config("routes: [{id: x}]\n", version=2))
    view.console_watch = ConsoleWatch(8470, problem="console not started: port in use")
    text = "\n".join(screen(view, 120, 30))
    assert "do not validate" in text and "! console not started: port in use" in text, text
    plain = list(PlainLines().changes(view))
    assert any(" gateway the published routes do not validate" in line for line in plain), plain


def test_events_panel_shows_groups_and_lag_within_80x24() -> None:
    """Topics' groups with pending and behind counts, and the shop's count, still in 80x24."""
    view = busy_view()
    view.event_lag = [
        GroupStats("orders.created", "analytics", 1, 5),
        GroupStats("orders.created", "billing", 0, 0),
    ]
    view.orders_counted = 1
    lines = screen(view, 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24, text  # a small terminal keeps the main four; events when room
    lines = screen(view, 100, 40)
    text = "\n".join(lines)
    assert "events · 1 topic · analytics counted 1 order" in text, text
    assert re.search(r"orders\.created\s+analytics\s+1\s+5", text), text
    plain = "\n".join(PlainLines().changes(view))
    assert "events orders.created group analytics: 1 pending, 5 behind" in plain, plain
    assert "analytics counted 1 order" in plain and "1 orders" not in plain, plain
