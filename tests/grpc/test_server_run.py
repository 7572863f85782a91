"""``keel run module:server`` serves a keel.grpc.Server as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from keel.testing import free_port
from tests.conftest import make_url
from tests.grpc import echo_pb2, echo_pb2_grpc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KEEL = [sys.executable, "-m", "keel.cli"]


def _instances(url: str) -> list[dict[str, object]]:
    """The registered ``users`` instances; none yet is an empty list (exit code 1)."""
    listed = subprocess.run(
        [*KEEL, "--store", url, "instances", "users", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert listed.returncode in (0, 1), listed.stderr
    text = listed.stdout.strip()
    if listed.returncode == 1 or not text:
        return []
    document = json.loads(text)
    return document if isinstance(document, list) else [document]


def _unary(port: int) -> echo_pb2.EchoReply:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply: echo_pb2.EchoReply = echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(text="run"), timeout=10
        )
        return reply


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_keel_run_serves_a_grpc_server_registers_it_and_exits_cleanly(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """--name and --port apply to the Server object; it registers grpc://, SIGTERM exits 0."""
    url = make_url(backend, request, tmp_path)
    port = free_port()
    target = "tests.grpc._server_child:server"
    command = [*KEEL, "--store", url, "run", target, "--name", "users", "--port", str(port)]
    env = {**os.environ, "KEEL_SERVICE_DRAIN_DELAY_S": "0.1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (listed := _instances(url)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "never registered"
            time.sleep(0.1)
        assert listed[0]["url"] == f"grpc://127.0.0.1:{port}"
        assert _unary(port).text == "run"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert _instances(url) == []
