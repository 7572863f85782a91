"""The gateway beside a direct call and beside nginx, with wrk, in one run.

    python bench/gateway.py                  # direct, gateway, nginx, gateway + JWT + limit
    python bench/gateway.py --runs 3 --duration 4
    python bench/gateway_clients.py          # the upstream HTTP clients compared

1. throughput: ``wrk -t1 -c64`` for ``--duration`` seconds against a hello
   upstream (uvicorn, 1 worker, uvloop, httptools) directly, through the keel
   gateway (1 worker) and through nginx (``worker_processes 1``, ``proxy_pass``
   to an upstream block with ``keepalive``; a private prefix and config in a
   temporary directory). Runs are interleaved and the medians of ``--runs``
   compared. Targets: gateway >= 0.5x direct, >= 0.3x nginx.
2. added latency: wrk is closed-loop (no ``wrk2`` in Debian), so "half of the
   gateway's peak rate" is approximated by a low connection count
   (``--latency-connections``, default 1) whose achieved rate is printed next
   to the peak; added p50/p99 = gateway minus direct at the same count.
3. with JWT auth and a rate limit on the route (high enough not to refuse):
   throughput against the plain route. Target: <= 15% below.

Each throughput row also shows the CPU microseconds per request used by the
process in front (the upstream, the gateway or nginx) and by the upstream,
read from ``/proc/<pid>/stat``: unlike requests per second, that figure barely
moves when other work shares the machine.

The gateway is keel's ``Gateway`` when ``keel.gateway`` exports it (routes in
the config center, auth, limits), else a bare ASGI app over
``keel.gateway._proxy.Upstreams`` served by uvicorn (the row says which).
wrk, the servers and this script share the machine's cores: the numbers are a
measurement, never asserted. Prints a table and one JSON document.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

HELLO = b"Hello, world!"


# -- child processes --------------------------------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }
    )
    await send({"type": "http.response.body", "body": HELLO})


def _config(app: Any, port: int, http: Any = "httptools") -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http,
        loop="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


def _uvicorn(app: Any, port: int) -> None:
    import uvicorn
    import uvloop

    uvloop.run(uvicorn.Server(_config(app, port)).serve())


def serve_hello(port: int, store_url: str | None) -> None:
    """Child: the hello upstream, registered as ``hello`` when given a store."""
    if store_url is None:
        _uvicorn(_hello, port)
        return
    import uvicorn
    import uvloop

    import keel
    from keel.registry import Instance, Registry

    async def main() -> None:
        async with keel.connect(store_url) as store, Registry(store) as registry:
            await registry.register(Instance(service="hello", address="127.0.0.1", port=port))
            await uvicorn.Server(_config(_hello, port)).serve()

    uvloop.run(main())


def serve_gateway(port: int, store_url: str) -> None:
    """Child: a bare Upstreams-backed ASGI app forwarding everything to ``hello``.

    Served as the keel Gateway is (uvicorn with the gateway's write-coalescing
    protocol), without routes, security, the service runtime or the relay: the
    floor of the gateway's general (ASGI) path, which its relay bypasses for
    plain forwards.
    """
    import uvicorn
    import uvloop

    import keel
    from keel.gateway._proxy import Target, Upstreams
    from keel.gateway._serving import GatewayHttpProtocol
    from keel.gateway._wire import HOP_BY_HOP
    from keel.registry import Discovery

    target = Target(route="hello", service="hello")

    async def main() -> None:
        store = await keel.connect(store_url)
        async with Discovery(store) as discovery, Upstreams(discovery) as upstreams:
            await discovery.instances("hello")

            async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
                if scope["type"] != "http":
                    return
                path_qs = scope["raw_path"]
                if scope["query_string"]:
                    path_qs += b"?" + scope["query_string"]
                headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
                await upstreams.forward(target, scope["method"], path_qs, headers, receive, send)

            await uvicorn.Server(_config(app, port, GatewayHttpProtocol)).serve()
        await store.close()

    uvloop.run(main())


def serve_keel_gateway(port: int, store_url: str) -> None:
    """Child: keel's Gateway (routes from the config center), no access log."""
    import uvloop

    from keel.gateway import Gateway
    from keel.service import ServiceSettings

    gateway = Gateway(
        store_url,
        port=port,
        access_log=False,
        settings=ServiceSettings(port=port, drain_delay_s=0.05, grace_s=2.0),
    )
    uvloop.run(gateway.serve())


def _routes(pem: str) -> dict[str, Any]:
    return {
        "jwt": {
            "main": {
                "algorithms": ["RS256"],
                "audience": "bench",
                "issuer": "https://id.example",
                "key_file": pem,
            }
        },
        "routes": [
            {"id": "plain", "match": {"path": "/"}, "forward": {"service": "hello"}},
            {
                "id": "secure",
                "match": {"path": "/secure/"},
                "priority": 10,
                "forward": {"service": "hello"},
                "auth": {"jwt": "main"},
                "limits": {"rate": {"requests": 1_000_000, "per_s": 1, "burst": 1_000_000}},
            },
        ],
    }


def prepare_keel_gateway(tmp: str, store_url: str) -> str | None:
    """Publish the bench routes and return a bearer token (None: no keel Gateway here)."""
    try:
        from keel.gateway import Gateway  # noqa: F401
    except ImportError:
        return None
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    import keel
    from keel.config import ConfigCenter

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = Path(tmp) / "public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    async def publish() -> None:
        async with keel.connect(store_url) as store:
            await ConfigCenter(store).publish("gateway.yaml", json.dumps(_routes(str(pem))))

    asyncio.run(publish())
    claims = {"sub": "bench", "aud": "bench", "iss": "https://id.example"}
    return jwt.encode({**claims, "exp": time.time() + 900}, key, algorithm="RS256")


# -- helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


@contextlib.contextmanager
def child(*args: str, script: str = __file__) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``script`` (this one unless given) with ``args``; terminated on exit."""
    proc = subprocess.Popen([sys.executable, script, *args], cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream hello {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(tmp: str, upstream: int, port: int) -> Iterator[subprocess.Popen[bytes] | None]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        print("nginx not found: apt-get install -y nginx (its row is skipped)")
        yield None
        return
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, upstream=upstream, port=port))
    proc = subprocess.Popen([binary, "-p", tmp, "-c", str(conf)])
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    port: int, connections: int, duration_s: float, path: str = "/", header: str | None = None
) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 latency in ms, errors."""
    extra = ["-H", header] if header else []
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s:g}s",
            "--latency",
            *extra,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: .*", out)
    return {
        "requests": total,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errs else 0.0,
    }


# -- the run --------------------------------------------------------------------------

Target = tuple[str, int, str, str | None, int]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    tmp = tempfile.mkdtemp(prefix="keel-bench-gw-")
    store_url = f"sqlite:///{tmp}/keel.db"
    etcd = None
    if args.backend == "etcd":  # as in production: a store server, no poller thread
        from keel.testing import EtcdCluster

        etcd = EtcdCluster(1).start()
        store_url = etcd.url
    try:
        return _run(args, tmp, store_url)
    finally:
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, tmp: str, store_url: str) -> dict[str, Any]:
    hello, bare, gw, ngx = free_port(), free_port(), free_port(), free_port()
    results: dict[str, list[dict[str, float]]] = {}
    low: dict[str, list[dict[str, float]]] = {}
    token = prepare_keel_gateway(tmp, store_url)
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(child("--serve-hello", str(hello), "--store", store_url)).pid
        wait_port(hello)
        bare_pid = stack.enter_context(child("--serve-gateway", str(bare), store_url)).pid
        # (name, port, path, header, pid of the process in front)
        targets: list[Target] = [("direct", hello, "/", None, up)]
        if token is not None:
            gw_pid = stack.enter_context(child("--serve-keel-gateway", str(gw), store_url)).pid
            wait_port(gw)
            targets.append(("gateway", gw, "/", None, gw_pid))
            auth = f"Authorization: Bearer {token}"
            targets.append(("gateway+jwt+limit", gw, "/secure/", auth, gw_pid))
            targets.append(("bare proxy", bare, "/", None, bare_pid))
        else:
            targets.append(("gateway", bare, "/", None, bare_pid))
            print("keel.gateway.Gateway not available: the gateway row is the bare Upstreams app")
        wait_port(bare)
        nginx_proc = stack.enter_context(nginx(tmp, hello, ngx))
        if nginx_proc is not None:
            targets.append(("nginx", ngx, "/", None, nginx_proc.pid))
        for _, port, path, header, _ in targets:
            warm = wrk(port, args.connections, 1, path, header)  # warm-up
            if warm["non_2xx"]:
                print(f"warning: {warm['non_2xx']:.0f} non-2xx answers from port {port}{path}")
        latency_targets = [t for t in targets if t[0] in ("direct", "gateway")]
        for _ in range(args.runs):
            for name, port, path, header, pid in targets:
                before = cpu_s(pid), cpu_s(up)
                row = wrk(port, args.connections, args.duration, path, header)
                n = row["requests"]
                row["front_cpu_us"] = (cpu_s(pid) - before[0]) / n * 1e6
                row["upstream_cpu_us"] = (cpu_s(up) - before[1]) / n * 1e6
                results.setdefault(name, []).append(row)
            for name, port, path, header, _ in latency_targets:
                row = wrk(port, args.latency_connections, args.latency_duration, path, header)
                low.setdefault(name, []).append(row)
    return report(results, low, args)


def _rounds(results: dict[str, list[dict[str, float]]], base: str, name: str = "gateway") -> str:
    """The ratio of ``name`` to ``base`` in each round (the two ran seconds apart)."""
    ratios = [a["rps"] / b["rps"] for a, b in zip(results[name], results[base], strict=True)]
    if len(ratios) < 2:
        return ""
    return f"; by round {min(ratios):.2f}-{max(ratios):.2f}"


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(
    results: dict[str, list[dict[str, float]]],
    low: dict[str, list[dict[str, float]]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    med = {name: {k: _median(rows, k) for k in rows[0]} for name, rows in results.items()}
    lat = {name: {k: _median(rows, k) for k in rows[0]} for name, rows in low.items()}
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s, medians of {args.runs}")
    print("(cpu: CPU microseconds per request of the process in front, and of the upstream)")
    print(
        f"{'':18} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'cpu':>6} {'up cpu':>6}"
    )
    for name, m in med.items():
        print(
            f"{name:18} {m['rps']:8.0f} {m['p50_ms']:7.2f} {m['p99_ms']:7.2f} "
            f"{m['non_2xx']:7.0f} {m['front_cpu_us']:6.1f} {m['upstream_cpu_us']:6.1f}"
        )
    out: dict[str, Any] = {"throughput": med, "low_load": lat}
    g, d = med["gateway"]["rps"], med["direct"]["rps"]
    out["gateway_vs_direct"] = g / d
    print(f"\ngateway / direct: {g / d:.2f}x (target >= 0.5x){_rounds(results, 'direct')}")
    per_core = med["direct"]["front_cpu_us"] / med["gateway"]["front_cpu_us"]
    out["gateway_vs_direct_per_core"] = per_core
    print(
        f"  per core (the upstream's CPU per request / the gateway's): {per_core:.2f}x, what a "
        "gateway process forwards for each request an upstream process serves, cores apart"
    )
    if "nginx" in med:
        n = med["nginx"]["rps"]
        out["gateway_vs_nginx"] = g / n
        print(f"gateway / nginx:  {g / n:.2f}x (target >= 0.3x)")
    if "gateway+jwt+limit" in med:
        secure = med["gateway+jwt+limit"]["rps"]
        out["jwt_limit_vs_plain"] = secure / g
        print(
            f"gateway with JWT + rate limit / plain: {secure / g:.2f}x (target >= 0.85x)"
            + _rounds(results, "gateway", "gateway+jwt+limit")
        )
    if "bare proxy" in med:
        out["bare_proxy_vs_direct"] = med["bare proxy"]["rps"] / d
        print(f"bare Upstreams ASGI app (no relay) / direct: {out['bare_proxy_vs_direct']:.2f}x")
    gl, dl = lat["gateway"], lat["direct"]
    out["added_p50_ms"] = gl["p50_ms"] - dl["p50_ms"]
    out["added_p99_ms"] = gl["p99_ms"] - dl["p99_ms"]
    print(
        f"added latency at -c{args.latency_connections} (closed loop, gateway at "
        f"{gl['rps']:.0f} req/s = {gl['rps'] / g:.2f} of its peak): "
        f"p50 {out['added_p50_ms']:+.2f} ms, p99 {out['added_p99_ms']:+.2f} ms (target p50 <= 1 ms)"
    )
    print(json.dumps(out, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--backend",
        choices=("sqlite", "etcd"),
        default="sqlite",
        help="the store the gateway and the upstream use (etcd: a private etcd is started)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--latency-connections", type=int, default=1)
    parser.add_argument("--latency-duration", type=float, default=3.0)
    parser.add_argument("--serve-hello", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-keel-gateway", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hello is not None:
        serve_hello(args.serve_hello, args.store)
    elif args.serve_keel_gateway is not None:
        serve_keel_gateway(int(args.serve_keel_gateway[0]), args.serve_keel_gateway[1])
    elif args.serve_gateway is not None:
        serve_gateway(int(args.serve_gateway[0]), args.serve_gateway[1])
    else:
        run(args)


if __name__ == "__main__":
    main()
