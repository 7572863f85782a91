"""A small Starlette app the service and client tests run (in process and in children)."""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from keel.http import Client


def make_app(name: str, client: Client | None = None) -> Starlette:
    """``/echo``, ``/slow?s=``, ``/fail``, ``/post`` and ``/call?to=`` (needs ``client``).

    ``/echo`` names the process that answered (``pid``), for the worker tests.
    """
    posts = {"count": 0}

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "name": name,
                "deadline": request.headers.get("keel-deadline"),
                "traceparent": request.headers.get("traceparent"),
                "pid": os.getpid(),
            }
        )

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("s", "1")))
        return PlainTextResponse(f"slow {name}")

    async def fail(request: Request) -> Response:
        return PlainTextResponse("boom", status_code=500)

    async def post(request: Request) -> Response:
        posts["count"] += 1
        return JSONResponse({"name": name, "count": posts["count"]})

    async def call(request: Request) -> Response:
        assert client is not None
        target = request.query_params["to"]
        path = request.query_params.get("path", "/echo")
        downstream = await client.get(f"http://{target}{path}")
        return JSONResponse(
            {
                "name": name,
                "deadline": request.headers.get("keel-deadline"),
                "downstream": downstream.json(),
            }
        )

    return Starlette(
        routes=[
            Route("/echo", echo),
            Route("/slow", slow),
            Route("/fail", fail),
            Route("/post", post, methods=["POST"]),
            Route("/call", call),
        ]
    )


app = make_app("echo")
"""A module-level app for ``keel run tests.service._apps:app``."""
